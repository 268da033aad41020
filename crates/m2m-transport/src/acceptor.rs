//! The acceptor (TS-0003 clause 8.2: every association is established here): one loop for every
//! listener of the CSE, the MAF and the MEF. A connection is admitted under a cap, waits for its
//! first byte, takes a handshake slot of its source address only while its handshake is in flight,
//! becomes an association through the service's [`Binder`] (one audit line, established or
//! refused), and is handed to the service with its timeouts. Shutdown stops accepting, lets open
//! connections finish within a grace period, then ends them.

use crate::timed_io::TimedIo;
use crate::Limits;
use m2m_security::tls::Authenticated;
use openssl::ssl::{Ssl, SslContext, SslRef};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_openssl::SslStream;

/// What a listener puts in front of its service.
pub enum Security {
    /// No security association (development, or networks protected otherwise).
    Plain,
    /// TLS in the oneM2M profiles: every connection is a security association.
    Tls(SslContext),
}

/// Turns what a completed handshake proved into the service's association, or refuses it with a
/// reason for the audit log.
pub trait Binder: Send + Sync + 'static {
    type Association: Send + Sync + fmt::Display + 'static;
    fn bind(
        &self,
        proof: Authenticated,
        ssl: &SslRef,
        peer: SocketAddr,
    ) -> Result<Self::Association, String>;
}

/// The byte stream of a connection, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Stream {
    /// The TLS session, if any.
    pub fn ssl(&self) -> Option<&SslRef> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => Some(s.ssl()),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection handed to the service.
pub struct Connection<A> {
    pub peer: SocketAddr,
    /// The association (TLS listeners), `None` on a plain listener.
    pub association: Option<Arc<A>>,
    pub io: TimedIo<Stream>,
    /// Becomes `true` when the server shuts down: finish the current request, then close.
    pub shutdown: watch::Receiver<bool>,
}

/// One listener: its socket, what it puts in front, and its limits.
pub struct Listener {
    /// Names the listener in audit lines (`cse-tls`, `maf`, ...).
    pub name: &'static str,
    pub tcp: TcpListener,
    pub security: Security,
    pub limits: Limits,
}

/// A running listener; dropping it ends every connection at once, [`Server::shutdown`] gracefully.
pub struct Server {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts accepting on `listener`; each connection that becomes an association (or any
    /// connection of a plain listener) is given to `handle`.
    pub fn spawn<B, F, Fut>(listener: Listener, binder: Arc<B>, handle: F) -> io::Result<Server>
    where
        B: Binder,
        F: Fn(Connection<B::Association>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let local_addr = listener.tcp.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            name: listener.name,
            security: listener.security,
            connections: Arc::new(Semaphore::new(listener.limits.max_connections.max(1))),
            limits: listener.limits,
            sources: Sources::default(),
            binder,
            handle,
            stopped: stopped.clone(),
            last_cap_warning: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(shared, listener.tcp, stopped));
        Ok(Server::running(local_addr, stop, accept))
    }

    /// A listener's handle: the task that serves it and the switch that stops it (TCP here,
    /// UDP in [`crate::datagram`]).
    pub(crate) fn running(
        local_addr: SocketAddr,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    ) -> Server {
        Server {
            local_addr,
            stop,
            accept: Some(task),
        }
    }

    /// Stops accepting, tells open connections to finish, waits for them at most `grace`, then
    /// ends what is left.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.take() {
            let abort = accept.abort_handle();
            if tokio::time::timeout(grace + Duration::from_secs(1), accept)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(accept) = &self.accept {
            accept.abort();
        }
    }
}

struct Shared<B, F> {
    name: &'static str,
    security: Security,
    limits: Limits,
    connections: Arc<Semaphore>,
    sources: Sources,
    binder: Arc<B>,
    handle: F,
    stopped: watch::Receiver<bool>,
    /// Unix seconds of the last "connection cap reached" warning (one a second at most).
    last_cap_warning: AtomicU64,
}

async fn accept_loop<B, F, Fut>(
    shared: Arc<Shared<B, F>>,
    tcp: TcpListener,
    mut stopped: watch::Receiver<bool>,
) where
    B: Binder,
    F: Fn(Connection<B::Association>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Connections live in this set: aborting the loop drops the set, which ends them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok((stream, addr)) => {
                    // The listener's cap, and the process's file descriptors: a connection that
                    // would leave the CSE without descriptors for its store and its own
                    // connections is closed as it arrives.
                    let permits = Arc::clone(&shared.connections)
                        .try_acquire_owned()
                        .ok()
                        .zip(Arc::clone(descriptors()).try_acquire_owned().ok());
                    let Some(permit) = permits else {
                        shared.cap_reached(addr);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    conns.spawn(async move {
                        let _permit = permit;
                        shared.connection(stream, addr).await;
                    });
                }
                Err(e) => {
                    // Running out of file descriptors must not end the server.
                    tracing::warn!(listener = shared.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop_requested(&mut stopped) => break,
        }
    }
    drop(tcp);
    let grace = Duration::from_millis(shared.limits.shutdown_grace_ms);
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::info!(
            listener = shared.name,
            left = conns.len(),
            "shutdown: connections still open after the grace period are closed"
        );
    }
}

impl<B, F, Fut> Shared<B, F>
where
    B: Binder,
    F: Fn(Connection<B::Association>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn cap_reached(&self, addr: SocketAddr) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.last_cap_warning.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(target: "audit", listener = self.name, peer = %addr, max = self.limits.max_connections, "connection refused: the listener is at its connection cap");
        }
    }

    async fn connection(&self, tcp: TcpStream, addr: SocketAddr) {
        let idle = Duration::from_millis(self.limits.idle_timeout_ms);
        let header = Duration::from_millis(self.limits.header_read_timeout_ms);
        match &self.security {
            Security::Plain => {
                // An idle connection holds nothing but its socket until its first request.
                if !self.first_byte(&tcp, idle).await {
                    return;
                }
                let io = TimedIo::new(Stream::Plain(tcp), idle, header);
                (self.handle)(Connection {
                    peer: addr,
                    association: None,
                    io,
                    shutdown: self.stopped.clone(),
                })
                .await
            }
            Security::Tls(context) => {
                let handshake = Duration::from_millis(self.limits.handshake_timeout_ms);
                // A silent connection is no handshake in flight yet: it holds no slot of its source.
                match self.wait_first_byte(&tcp, handshake).await {
                    FirstByte::Data => {}
                    FirstByte::Closed | FirstByte::Stopped => return,
                    FirstByte::TimedOut => {
                        tracing::info!(target: "audit", listener = self.name, peer = %addr, reason = "handshake timed out before a ClientHello", "association refused");
                        return;
                    }
                }
                let Some(stream) = self.establish(context, tcp, addr, handshake).await else {
                    return;
                };
                let (stream, association) = stream;
                // Idle associations stay small: no HTTP buffers before the client speaks.
                let ready =
                    stream.ssl().pending() > 0 || self.first_byte(stream.get_ref(), idle).await;
                if !ready {
                    return;
                }
                let io = TimedIo::new(Stream::Tls(Box::new(stream)), idle, header);
                (self.handle)(Connection {
                    peer: addr,
                    association: Some(Arc::new(association)),
                    io,
                    shutdown: self.stopped.clone(),
                })
                .await
            }
        }
    }

    /// The first-byte wait, ended by a shutdown: a connection that has sent no request yet holds
    /// nothing to finish, so it does not wait out the grace period.
    async fn wait_first_byte(&self, tcp: &TcpStream, timeout: Duration) -> FirstByte {
        let mut stopped = self.stopped.clone();
        if *stopped.borrow() {
            return FirstByte::Stopped;
        }
        tokio::select! {
            first = wait_first_byte(tcp, timeout) => first,
            _ = stop_requested(&mut stopped) => FirstByte::Stopped,
        }
    }

    /// Whether the client sent something within `timeout` (and before a shutdown).
    async fn first_byte(&self, tcp: &TcpStream, timeout: Duration) -> bool {
        matches!(self.wait_first_byte(tcp, timeout).await, FirstByte::Data)
    }

    /// Runs the handshake under the per-source limit and turns its outcome into an association.
    /// Every outcome is one audit line; no key material is ever logged.
    async fn establish(
        &self,
        context: &SslContext,
        tcp: TcpStream,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Option<(SslStream<TcpStream>, B::Association)> {
        let Some(_slot) = self
            .sources
            .begin(addr.ip(), self.limits.max_handshakes_per_source)
        else {
            tracing::warn!(target: "audit", listener = self.name, peer = %addr, "association refused: too many handshakes in progress from this address");
            return None;
        };
        match self.handshake(context, tcp, addr, timeout).await {
            Ok((stream, association)) => {
                tracing::info!(target: "audit", listener = self.name, peer = %addr, association = %association, "association established");
                Some((stream, association))
            }
            Err(why) => {
                tracing::warn!(target: "audit", listener = self.name, peer = %addr, reason = %why, "association refused");
                None
            }
        }
    }

    async fn handshake(
        &self,
        context: &SslContext,
        tcp: TcpStream,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(SslStream<TcpStream>, B::Association), String> {
        let mut ssl = Ssl::new(context).map_err(|e| e.to_string())?;
        m2m_security::tls::set_peer_address(&mut ssl, addr.ip());
        let mut stream = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        match tokio::time::timeout(timeout, Pin::new(&mut stream).accept()).await {
            Err(_) => return Err("handshake timed out".into()),
            Ok(Err(e)) => return Err(m2m_security::tls::handshake_reason(&e)),
            Ok(Ok(())) => {}
        }
        let ssl = stream.ssl();
        let proof =
            m2m_security::tls::association_of(ssl).ok_or("the handshake authenticated nothing")?;
        let association = self.binder.bind(proof, ssl, addr)?;
        Ok((stream, association))
    }
}

/// What a connection did first.
enum FirstByte {
    Data,
    Closed,
    TimedOut,
    /// The server shuts down.
    Stopped,
}

/// Descriptors kept for everything but accepted connections: the store, logs, outgoing
/// connections, key files.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The process-wide budget of accepted connections: the open-files limit (raised to its hard
/// limit once) less [`RESERVED_DESCRIPTORS`], shared by every listener of the process.
fn descriptors() -> &'static Arc<Semaphore> {
    static BUDGET: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
    BUDGET.get_or_init(|| {
        let limit = rlimit::increase_nofile_limit(u64::MAX)
            .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
            .unwrap_or(1024);
        let budget = limit.saturating_sub(RESERVED_DESCRIPTORS).max(16);
        tracing::info!(
            open_files = limit,
            connections = budget,
            "connection budget of the process"
        );
        Arc::new(Semaphore::new(
            usize::try_from(budget)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS),
        ))
    })
}

/// Waits until the client sends something, without consuming it, at most `timeout`. Readiness
/// alone is not enough: after a handshake the socket often still reads as ready although nothing
/// is there.
async fn wait_first_byte(tcp: &TcpStream, timeout: Duration) -> FirstByte {
    let mut one = [0u8; 1];
    match tokio::time::timeout(timeout, tcp.peek(&mut one)).await {
        Ok(Ok(n)) if n > 0 => FirstByte::Data,
        Ok(_) => FirstByte::Closed,
        Err(_) => FirstByte::TimedOut,
    }
}

/// Handshakes in flight per source address.
#[derive(Default)]
pub(crate) struct Sources {
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One handshake slot of a source; given back when dropped.
pub(crate) struct Slot {
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Sources {
    pub(crate) fn begin(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let n = p.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            pending: Arc::clone(&self.pending),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = p.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                p.remove(&self.ip);
            }
        }
    }
}

/// A binder for plain listeners, whose connections never get to one.
pub struct NoAssociation;

/// The association type of [`NoAssociation`]: never made.
pub enum Never {}

impl fmt::Display for Never {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl Binder for NoAssociation {
    type Association = Never;
    fn bind(&self, _: Authenticated, _: &SslRef, _: SocketAddr) -> Result<Never, String> {
        Err("this listener makes no associations".into())
    }
}

/// Resolves once a shutdown was asked for.
pub(crate) async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
