//! UDP listeners for the CoAP binding (TS-0008): plain, or DTLS 1.2 where each peer address is one
//! security association (TS-0003 clause 10.2.1), established and bound exactly as on TLS.
//!
//! One task reads the socket and hands each datagram to the session of its source address. Under
//! DTLS no state exists for an address before it proved it receives there: a ClientHello without
//! a valid cookie is answered with a HelloVerifyRequest built here ([`hello_verify_request`], 31
//! bytes of handshake against the client's hundred and more: no amplification, RFC 6347 clause
//! 4.2.1) and forgotten; one that returns the cookie of its address starts a session (OpenSSL is
//! first given the ClientHello the client sent before, [`first_hello`], so that it continues as
//! after its own cookie exchange). A proven ClientHello from an address that has an association
//! replaces it (a restarted device, a rebound NAT: clause 4.2.8); a spoofed one cannot. Sessions
//! are capped per listener (`max_connections`) and per source while handshaking
//! (`max_handshakes_per_source`); a handshake must finish within `handshake_timeout_ms` and a
//! session with no traffic for `idle_timeout_ms` ends.
//!
//! OpenSSL's DTLS retransmits a lost flight only when it is called after its timer expired; a
//! handshaking session's reads wake every [`RETRANSMIT_POLL`] so that it is.
//!
//! Once the handshake is done under AES-128-CCM_8, the association's records are protected by
//! [`crate::dtls_record`] and OpenSSL's state is freed (its record buffers would otherwise stay,
//! about 36 KiB per idle association); the server's last flight is kept and sent again if the
//! client shows it did not get it. The CBC suites stay with OpenSSL.

use crate::acceptor::{Binder, Security, Server, Sources};
use crate::dtls_record::{self, Record, RecordLayer};
use crate::Limits;
use openssl::ssl::{Ssl, SslContext};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_openssl::SslStream;

/// How often a handshaking session gives OpenSSL the chance to retransmit.
pub const RETRANSMIT_POLL: Duration = Duration::from_millis(100);
/// The path MTU assumed for DTLS records (IPv6 minimum 1280 less headers).
pub const MTU: u32 = 1200;
/// The largest datagram read.
const MAX_DATAGRAM: usize = 65_535;
/// The largest message a DTLS session takes in one record: a 1024-byte block and its options.
pub const MAX_MESSAGE: usize = 4096;
/// Datagrams queued per session before more are dropped (UDP: the peer retransmits).
const QUEUE: usize = 8;
/// Datagrams larger than a DTLS record can be (2^14 plaintext and its expansion, RFC 6347
/// clause 4.1) are dropped as they arrive.
const MAX_ACCEPTED: usize = (1 << 14) + 2048 + 13;

/// One UDP listener: its socket, plain or DTLS, and its limits.
pub struct DatagramListener {
    /// Names the listener in audit lines (`cse-coap`, `cse-dtls`).
    pub name: &'static str,
    pub udp: UdpSocket,
    pub security: Security,
    pub limits: Limits,
}

/// A session handed to the service: one peer address, its association (DTLS) or none (plain).
pub struct Session<A> {
    pub peer: SocketAddr,
    pub association: Option<Arc<A>>,
    pub io: SessionIo,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// The messages of a session: whole datagrams (plain) or whole DTLS records.
pub struct SessionIo {
    inner: Io,
    idle: Duration,
}

enum Io {
    Plain(PeerPipe),
    Dtls(Box<SslStream<PeerPipe>>),
    /// DTLS whose records [`dtls_record`] protects (no OpenSSL state left).
    Parked(Box<Parked>),
}

/// An association after its handshake, without OpenSSL.
struct Parked {
    rx: mpsc::Receiver<Vec<u8>>,
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    layer: RecordLayer,
    /// The server's last handshake flight (ChangeCipherSpec, Finished), sent again when the
    /// client retransmits its own: it did not get it (RFC 6347 clause 4.2.4).
    last_flight: Vec<Vec<u8>>,
    /// Messages of a datagram that carried more than one record.
    queued: std::collections::VecDeque<Vec<u8>>,
    /// How many more times the last flight may be sent again.
    resends: u8,
    /// The peer closed (close_notify or a fatal alert): what is queued is all that is left.
    closed: bool,
    /// When the peer's last authenticated record came: the idle timeout counts from there, so
    /// forged datagrams do not keep an association alive.
    last_heard: tokio::time::Instant,
}

/// How often a parked association answers a retransmitted Finished: a peer that still has not
/// got the flight after that starts over.
const MAX_RESENDS: u8 = 3;

/// What the pipe saw of a handshake, for the record layer that takes over after it.
#[derive(Default)]
struct HandshakeLog {
    /// The highest record sequence number written in epoch 1.
    written_epoch1: Option<u64>,
    /// The datagrams written since the peer's last datagram: the server's last flight at the end.
    last_flight: Vec<Vec<u8>>,
    read_since_write: bool,
    /// The peer's datagrams with epoch-1 records (its Finished): their numbers are used.
    epoch1_in: Vec<Vec<u8>>,
}

impl HandshakeLog {
    fn wrote(&mut self, d: &[u8]) {
        if self.read_since_write {
            self.last_flight.clear();
            self.read_since_write = false;
        }
        self.last_flight.push(d.to_vec());
        if let Some((1, seq)) = dtls_record::highest_record(d) {
            self.written_epoch1 = Some(self.written_epoch1.map_or(seq, |s| s.max(seq)));
        }
    }

    fn read(&mut self, d: &[u8]) {
        self.read_since_write = true;
        if dtls_record::has_epoch(d, 1) && self.epoch1_in.len() < 8 {
            self.epoch1_in.push(d.to_vec());
        }
    }
}

impl SessionIo {
    /// The next message; `None` once the peer is gone (idle timeout, close_notify, error).
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let idle = self.idle;
        match &mut self.inner {
            Io::Plain(pipe) => tokio::time::timeout(idle, pipe.rx.recv()).await.ok()?,
            Io::Parked(p) => p.recv(idle).await,
            Io::Dtls(stream) => loop {
                // An idle association waits for its next datagram without a buffer (thousands
                // of them must not each hold one); OpenSSL gets it once it is there.
                if stream.ssl().pending() == 0 && stream.get_ref().stash.is_none() {
                    let next = tokio::time::timeout(idle, stream.get_mut().rx.recv()).await;
                    match next {
                        Ok(Some(d)) => stream.get_mut().stash = Some(d),
                        _ => return None,
                    }
                }
                let mut buf = vec![0u8; MAX_MESSAGE];
                match tokio::time::timeout(idle, stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {
                        if stream.ssl().pending() > 0 {
                            // Larger than any message this binding sends or accepts in one
                            // piece (block-wise transfer exists for that): read it away, drop it.
                            while stream.ssl().pending() > 0 {
                                if !matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                                    return None;
                                }
                            }
                            continue;
                        }
                        buf.truncate(n);
                        return Some(buf);
                    }
                    _ => return None,
                }
            },
        }
    }

    /// Sends one message (one datagram, or one DTLS record).
    pub async fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Io::Plain(pipe) => pipe.sock.send_to(msg, pipe.peer).await.map(|_| ()),
            Io::Dtls(stream) => stream.write_all(msg).await,
            Io::Parked(p) => p.send(dtls_record::APPLICATION_DATA, msg).await,
        }
    }

    /// Ends a DTLS session with close_notify.
    pub async fn close(&mut self) {
        match &mut self.inner {
            Io::Dtls(stream) => {
                let _ = stream.shutdown().await;
            }
            // close_notify: a warning alert (RFC 5246 clause 7.2.1).
            Io::Parked(p) => {
                let _ = p.send(dtls_record::ALERT, &[1, 0]).await;
            }
            Io::Plain(_) => {}
        }
    }
}

/// Marks a connection whose handshake completed as ended cleanly, so that freeing it leaves its
/// session in the context's cache (OpenSSL drops the session of a connection freed otherwise; one
/// that ended with a fatal alert was dropped already).
fn keep_session_resumable(stream: &mut SslStream<PeerPipe>) {
    if !stream.ssl().is_init_finished() {
        return;
    }
    // A close_notify written into a pipe that swallows it: the peer keeps its association (the
    // record layer goes on, or it finds out at its next record), OpenSSL records a clean end.
    stream.get_mut().discard_writes = usize::MAX;
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let _ = Pin::new(stream).poll_shutdown(&mut cx);
}

impl Drop for SessionIo {
    fn drop(&mut self) {
        if let Io::Dtls(stream) = &mut self.inner {
            keep_session_resumable(stream);
        }
    }
}

impl Parked {
    /// Takes over an association whose handshake just completed, if its suite is one
    /// [`RecordLayer`] protects; `None` leaves it with OpenSSL.
    fn take_over(stream: &mut SslStream<PeerPipe>) -> Option<Self> {
        let log = stream.get_mut().log.take()?;
        if stream.ssl().pending() > 0 || stream.get_ref().stash.is_some() {
            return None;
        }
        let next = log.written_epoch1.map_or(0, |s| s + 1);
        let mut layer = RecordLayer::take_over(stream.ssl(), 1, next)?;
        // The client's Finished took its number; application data it sent right behind it
        // (which OpenSSL buffered but never handed out) is the session's first message.
        let mut queued = std::collections::VecDeque::new();
        for d in &log.epoch1_in {
            for r in layer.open(d) {
                if let Record::Data(m) = r {
                    if m.len() <= MAX_MESSAGE {
                        queued.push_back(m);
                    }
                }
            }
        }
        // OpenSSL keeps a session resumable only if its connection ended cleanly: the SSL goes
        // now, the association does not.
        keep_session_resumable(stream);
        let pipe = stream.get_mut();
        let (_, closed) = mpsc::channel(1);
        Some(Self {
            rx: std::mem::replace(&mut pipe.rx, closed),
            sock: Arc::clone(&pipe.sock),
            peer: pipe.peer,
            layer,
            last_flight: log.last_flight,
            queued,
            resends: MAX_RESENDS,
            closed: false,
            last_heard: tokio::time::Instant::now(),
        })
    }

    async fn recv(&mut self, idle: Duration) -> Option<Vec<u8>> {
        loop {
            if let Some(m) = self.queued.pop_front() {
                return Some(m);
            }
            if self.closed {
                return None;
            }
            let d = tokio::time::timeout_at(self.last_heard + idle, self.rx.recv())
                .await
                .ok()??;
            let records = self.layer.open(&d);
            if !records.is_empty() {
                self.last_heard = tokio::time::Instant::now();
            }
            let mut resent = false;
            for r in records {
                match r {
                    // Larger than any message this binding takes in one piece: dropped, as
                    // OpenSSL's path reads such a record away.
                    Record::Data(m) if m.len() > MAX_MESSAGE => {}
                    Record::Data(m) => self.queued.push_back(m),
                    // close_notify or a fatal alert ends the association (after what came
                    // before it in the same datagram).
                    Record::Alert(level, desc) if level == 2 || desc == 0 => {
                        self.closed = true;
                        break;
                    }
                    Record::Alert(..) => {}
                    Record::Retransmission if !resent && self.resends > 0 => {
                        resent = true;
                        self.resends -= 1;
                        for f in &self.last_flight {
                            let _ = self.sock.send_to(f, self.peer).await;
                        }
                    }
                    Record::Retransmission => {}
                }
            }
        }
    }

    async fn send(&mut self, ty: u8, msg: &[u8]) -> io::Result<()> {
        let rec = self.layer.seal(ty, msg).ok_or_else(|| {
            io::Error::other("record not sealed (too large, or sequence numbers used up)")
        })?;
        self.sock.send_to(&rec, self.peer).await.map(|_| ())
    }
}

/// A peer's datagrams in, and the socket out: the byte stream OpenSSL's DTLS runs on.
struct PeerPipe {
    rx: mpsc::Receiver<Vec<u8>>,
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    /// While handshaking: wakes reads so that OpenSSL sees its retransmission timer expire.
    tick: Option<tokio::time::Interval>,
    /// A datagram taken from `rx` while waiting, for OpenSSL's next read.
    stash: Option<Vec<u8>>,
    /// Writes to swallow (the HelloVerifyRequest of the synthesized first ClientHello).
    discard_writes: usize,
    /// While a DTLS handshake runs: what the record layer needs to take over after it.
    log: Option<HandshakeLog>,
}

impl AsyncRead for PeerPipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let next = match this.stash.take() {
            Some(d) => Poll::Ready(Some(d)),
            None => this.rx.poll_recv(cx),
        };
        match next {
            Poll::Ready(Some(d)) => {
                if let Some(log) = &mut this.log {
                    log.read(&d);
                }
                let n = d.len().min(buf.remaining());
                buf.put_slice(&d[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(None) => Poll::Ready(Ok(())),
            Poll::Pending => {
                if let Some(tick) = &mut this.tick {
                    while tick.poll_tick(cx).is_ready() {}
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for PeerPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.discard_writes > 0 {
            this.discard_writes -= 1;
            return Poll::Ready(Ok(buf.len()));
        }
        let sent = this.sock.poll_send_to(cx, buf, this.peer);
        if let (Poll::Ready(Ok(_)), Some(log)) = (&sent, &mut this.log) {
            log.wrote(buf);
        }
        sent
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Server {
    /// Starts reading a UDP `listener`; each session that becomes an association (or any
    /// session of a plain listener) is given to `handle`. The [`Server`] it returns stops and
    /// shuts down as a TCP one does.
    pub fn spawn_datagram<B, F, Fut>(
        listener: DatagramListener,
        binder: Arc<B>,
        handle: F,
    ) -> io::Result<Server>
    where
        B: Binder,
        F: Fn(Session<B::Association>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let local_addr = listener.udp.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let udp = listener.udp;
        let shared = Shared::new(
            listener.name,
            listener.security,
            listener.limits,
            binder,
            handle,
            stopped,
        );
        let task = tokio::spawn(read_loop(shared, Arc::new(udp)));
        Ok(Server::running(local_addr, stop, task))
    }

    /// [`Server::spawn_datagram`] on a thread of its own, with a runtime of one worker that runs
    /// the listener, its handshakes and its sessions (`handle` included). A datagram, its
    /// session and its answer then never cross threads: under a multi-threaded runtime the
    /// workers waking and stealing from each other at every datagram cost some 20% more CPU per
    /// handshake (docs/PERFORMANCE.md), the price libcoap's single-threaded server does not
    /// pay. The listener is limited to one core.
    pub fn spawn_datagram_on_own_thread<B, F, Fut>(
        listener: DatagramListener,
        binder: Arc<B>,
        handle: F,
    ) -> io::Result<Server>
    where
        B: Binder,
        F: Fn(Session<B::Association>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let local_addr = listener.udp.local_addr()?;
        // Moved to the thread's runtime, whose reactor then watches it.
        let std_udp = listener.udp.into_std()?;
        std_udp.set_nonblocking(true)?;
        // One worker, so nothing is stolen across threads; multi-thread all the same, so that a
        // PSK callback that must fetch its key (from a MAF) can block_in_place.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(listener.name)
            .enable_all()
            .build()?;
        let (stop, stopped) = watch::channel(false);
        let shared = Shared::new(
            listener.name,
            listener.security,
            listener.limits,
            binder,
            handle,
            stopped,
        );
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(listener.name.into())
            .spawn(move || {
                runtime.block_on(async move {
                    match UdpSocket::from_std(std_udp) {
                        // On the worker, with the sessions: block_on runs on this thread.
                        Ok(udp) => {
                            let _ = tokio::spawn(read_loop(shared, Arc::new(udp))).await;
                        }
                        Err(e) => {
                            tracing::error!(listener = shared.name, "cannot watch the socket: {e}")
                        }
                    }
                });
                // Dropping the runtime ends what the loop left.
                drop(runtime);
                let _ = done_tx.send(());
            })?;
        // Stands for the thread on the caller's runtime: it ends when the loop has ended.
        let task = tokio::spawn(async move {
            let _ = done_rx.await;
        });
        Ok(Server::running(local_addr, stop, task))
    }
}

impl<B, F> Shared<B, F> {
    fn new(
        name: &'static str,
        security: Security,
        limits: Limits,
        binder: Arc<B>,
        handle: F,
        stopped: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            name,
            security,
            limits,
            sources: Sources::default(),
            binder,
            handle,
            stopped,
            last_cap_warning: AtomicU64::new(0),
        })
    }
}

struct Shared<B, F> {
    name: &'static str,
    security: Security,
    limits: Limits,
    sources: Sources,
    binder: Arc<B>,
    handle: F,
    stopped: watch::Receiver<bool>,
    last_cap_warning: AtomicU64,
}

/// Whether a datagram is a DTLS record carrying a ClientHello (RFC 6347 clause 4.1, 4.2.2):
/// content type 22, a DTLS version, handshake type 1 after the 13-byte record header.
pub fn is_client_hello(d: &[u8]) -> bool {
    d.len() > 25 && d[0] == 22 && d[1] == 0xFE && matches!(d[2], 0xFD | 0xFF) && d[13] == 1
}

/// The way to a session from the read loop.
struct Entry {
    tx: mpsc::Sender<Vec<u8>>,
    /// Set once the session's handshake finished (plain sessions at once).
    established: Arc<AtomicBool>,
}

/// The cookie of a DTLS ClientHello carried whole in one record, if it has one (RFC 6347 clause
/// 4.2.1: after the session ID).
pub fn client_hello_cookie(d: &[u8]) -> Option<&[u8]> {
    if !is_client_hello(d) {
        return None;
    }
    // Record header 13 bytes, handshake header 12 (fragment offset at 19..22 must be 0), then
    // client_version 2 and random 32.
    if d.get(19..22)? != [0, 0, 0] {
        return None;
    }
    let sid_len = *d.get(59)? as usize;
    let at = 60 + sid_len;
    let cookie_len = *d.get(at)? as usize;
    d.get(at + 1..at + 1 + cookie_len)
}

/// The record sequence number (48 bits) of a DTLS record.
fn record_seq(d: &[u8]) -> Option<u64> {
    let b = d.get(5..11)?;
    Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
}

/// The HelloVerifyRequest answering ClientHello `hello` with `cookie` (RFC 6347 clause 4.2.1),
/// built here without any handshake state, as OpenSSL's `DTLSv1_listen` does: version DTLS 1.0 in
/// the record and the message, the ClientHello's record sequence number.
pub fn hello_verify_request(hello: &[u8], cookie: &[u8]) -> Option<Vec<u8>> {
    let seq = hello.get(5..11)?;
    let body_len = 3 + cookie.len();
    let mut d = Vec::with_capacity(13 + 12 + body_len);
    d.extend_from_slice(&[22, 0xFE, 0xFF, 0, 0]);
    d.extend_from_slice(seq);
    d.extend_from_slice(&((12 + body_len) as u16).to_be_bytes());
    d.push(3); // hello_verify_request
    d.extend_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    d.extend_from_slice(&[0, 0, 0, 0, 0]); // message_seq 0, fragment_offset 0
    d.extend_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    d.extend_from_slice(&[0xFE, 0xFF, cookie.len() as u8]);
    d.extend_from_slice(cookie);
    Some(d)
}

/// The first ClientHello the client would have sent: `hello` (the second, with a cookie, message
/// sequence 1) without its cookie, message sequence 0, one record earlier. Fed to a fresh
/// OpenSSL session before the real one, it leaves the session exactly where a cookie exchange
/// would have (its HelloVerifyRequest is discarded), so no state exists before the cookie proved
/// the source address. `None` when `hello` is not such a second ClientHello.
pub fn first_hello(hello: &[u8]) -> Option<Vec<u8>> {
    let cookie = client_hello_cookie(hello)?;
    let rec = record_seq(hello)?;
    // A whole message in one record, message sequence 1, an earlier record number to take.
    let msg_len = u32::from_be_bytes([0, hello[14], hello[15], hello[16]]) as usize;
    let frag_len = u32::from_be_bytes([0, hello[22], hello[23], hello[24]]) as usize;
    if cookie.is_empty() || rec == 0 || hello.get(17..19)? != [0, 1] || msg_len != frag_len {
        return None;
    }
    if hello.len() != 25 + msg_len {
        return None;
    }
    let sid_len = hello[59] as usize;
    let at = 60 + sid_len; // the cookie length byte
    let mut d = Vec::with_capacity(hello.len());
    d.extend_from_slice(&hello[..at]);
    d.push(0);
    d.extend_from_slice(&hello[at + 1 + cookie.len()..]);
    let new_msg_len = msg_len - cookie.len();
    d[5..11].copy_from_slice(&(rec - 1).to_be_bytes()[2..]);
    d[11..13].copy_from_slice(&((12 + new_msg_len) as u16).to_be_bytes());
    d[14..17].copy_from_slice(&(new_msg_len as u32).to_be_bytes()[1..]);
    d[17..19].copy_from_slice(&[0, 0]);
    d[22..25].copy_from_slice(&(new_msg_len as u32).to_be_bytes()[1..]);
    Some(d)
}

async fn read_loop<B, F, Fut>(shared: Arc<Shared<B, F>>, sock: Arc<UdpSocket>)
where
    B: Binder,
    F: Fn(Session<B::Association>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dtls = matches!(shared.security, Security::Tls(_));
    let mut sessions: HashMap<SocketAddr, Entry> = HashMap::new();
    let mut tasks = JoinSet::new();
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<SocketAddr>();
    let mut stopped = shared.stopped.clone();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            received = sock.recv_from(&mut buf) => {
                let (n, peer) = match received {
                    Ok(r) => r,
                    // ICMP errors surface here on some systems: not the listener's end.
                    Err(_) => continue,
                };
                if n > MAX_ACCEPTED {
                    continue;
                }
                let datagram = &buf[..n];
                if dtls && is_client_hello(datagram) {
                    let handshaking = sessions.get(&peer).is_some_and(|e| {
                        !e.established.load(Ordering::Relaxed) && !e.tx.is_closed()
                    });
                    if !handshaking {
                        // A new handshake, from a new address or one with an association (a
                        // restarted device, a rebound NAT: RFC 6347 clause 4.2.8). Nothing is
                        // kept for it until it returns the cookie of its address.
                        let proven = client_hello_cookie(datagram).is_some_and(|c| {
                            m2m_security::tls::dtls_cookie_is_valid(Some(peer.ip()), c)
                        });
                        match (proven, first_hello(datagram)) {
                            (true, Some(first)) => {
                                let opened = shared.open(
                                    sessions.len(),
                                    &mut tasks,
                                    &sock,
                                    peer,
                                    vec![first, datagram.to_vec()],
                                    &ended_tx,
                                );
                                // The old association, if any, ends: its queue closes.
                                match opened {
                                    Some(e) => { sessions.insert(peer, e); }
                                    None => { sessions.remove(&peer); }
                                }
                            }
                            _ => {
                                let cookie = m2m_security::tls::dtls_cookie(peer.ip());
                                if let Some(hvr) = hello_verify_request(datagram, &cookie) {
                                    let _ = sock.try_send_to(&hvr, peer);
                                }
                            }
                        }
                        continue;
                    }
                }
                let datagram = datagram.to_vec();
                if let Some(e) = sessions.get(&peer) {
                    match e.tx.try_send(datagram) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => continue,
                        Err(mpsc::error::TrySendError::Closed(d)) => {
                            sessions.remove(&peer);
                            if let Some(e) = shared.open(sessions.len(), &mut tasks, &sock, peer, vec![d], &ended_tx) {
                                sessions.insert(peer, e);
                            }
                        }
                    }
                } else if let Some(e) = shared.open(sessions.len(), &mut tasks, &sock, peer, vec![datagram], &ended_tx) {
                    sessions.insert(peer, e);
                }
            }
            Some(peer) = ended.recv() => {
                if sessions.get(&peer).is_some_and(|e| e.tx.is_closed()) {
                    sessions.remove(&peer);
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            changed = stopped.changed() => {
                // Asked to stop, or the Server was dropped (its sender went): either way, stop.
                if changed.is_err() || *stopped.borrow() { break; }
            }
        }
    }
    drop(sessions);
    let grace = Duration::from_millis(shared.limits.shutdown_grace_ms);
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
}

impl<B, F, Fut> Shared<B, F>
where
    B: Binder,
    F: Fn(Session<B::Association>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// Starts a session with its first datagram, if it may have one (`open` sessions now).
    fn open(
        self: &Arc<Self>,
        open: usize,
        tasks: &mut JoinSet<()>,
        sock: &Arc<UdpSocket>,
        peer: SocketAddr,
        first: Vec<Vec<u8>>,
        ended: &mpsc::UnboundedSender<SocketAddr>,
    ) -> Option<Entry> {
        let dtls = matches!(self.security, Security::Tls(_));
        if dtls && first.len() < 2 {
            // Under DTLS a session starts only from a ClientHello that returned its cookie
            // (the read loop's job); anything else is a stale session's record or noise.
            return None;
        }
        if open >= self.limits.max_connections {
            self.cap_reached(peer);
            return None;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        for d in first {
            let _ = tx.try_send(d);
        }
        let established = Arc::new(AtomicBool::new(false));
        let pipe = PeerPipe {
            rx,
            sock: Arc::clone(sock),
            peer,
            tick: None,
            stash: None,
            // The session's own HelloVerifyRequest answers the synthesized first ClientHello.
            discard_writes: usize::from(dtls),
            log: dtls.then(HandshakeLog::default),
        };
        let shared = Arc::clone(self);
        let ended = ended.clone();
        let flag = Arc::clone(&established);
        tasks.spawn(async move {
            shared.session(pipe, flag).await;
            let _ = ended.send(peer);
        });
        Some(Entry { tx, established })
    }

    fn cap_reached(&self, peer: SocketAddr) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.last_cap_warning.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(target: "audit", listener = self.name, peer = %peer, max = self.limits.max_connections, "session refused: the listener is at its session cap");
        }
    }

    async fn session(&self, mut pipe: PeerPipe, established: Arc<AtomicBool>) {
        let peer = pipe.peer;
        let idle = Duration::from_millis(self.limits.idle_timeout_ms);
        let (io, association) = match &self.security {
            Security::Plain => (
                SessionIo {
                    inner: Io::Plain(pipe),
                    idle,
                },
                None,
            ),
            Security::Tls(context) => {
                // The slot is the source's only while the handshake runs.
                let Some(slot) = self
                    .sources
                    .begin(peer.ip(), self.limits.max_handshakes_per_source)
                else {
                    tracing::warn!(target: "audit", listener = self.name, peer = %peer, "association refused: too many handshakes in progress from this address");
                    return;
                };
                let mut tick = tokio::time::interval(RETRANSMIT_POLL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                pipe.tick = Some(tick);
                let handshake = self.handshake(context, pipe).await;
                drop(slot);
                match handshake {
                    Ok((mut stream, association)) => {
                        stream.get_mut().tick = None;
                        // Under CCM_8 the record layer takes over and OpenSSL's state goes.
                        let suite = stream.ssl().current_cipher().map_or("", |c| c.name());
                        let (inner, records) = match Parked::take_over(&mut stream) {
                            Some(p) => (Io::Parked(Box::new(p)), "transport"),
                            None => (Io::Dtls(Box::new(stream)), "openssl"),
                        };
                        tracing::info!(target: "audit", listener = self.name, peer = %peer, association = %association, suite, records, "association established");
                        (SessionIo { inner, idle }, Some(Arc::new(association)))
                    }
                    Err(Refused::Because(why)) => {
                        tracing::warn!(target: "audit", listener = self.name, peer = %peer, reason = %why, "association refused");
                        return;
                    }
                }
            }
        };
        established.store(true, Ordering::Relaxed);
        (self.handle)(Session {
            peer,
            association,
            io,
            shutdown: self.stopped.clone(),
        })
        .await
    }

    async fn handshake(
        &self,
        context: &SslContext,
        pipe: PeerPipe,
    ) -> Result<(SslStream<PeerPipe>, B::Association), Refused> {
        let peer = pipe.peer;
        let timeout = Duration::from_millis(self.limits.handshake_timeout_ms);
        let because = |e: String| Refused::Because(e);
        let mut ssl = Ssl::new(context).map_err(|e| because(e.to_string()))?;
        m2m_security::tls::set_peer_address(&mut ssl, peer.ip());
        ssl.set_mtu(MTU).map_err(|e| because(e.to_string()))?;
        let mut stream = SslStream::new(ssl, pipe).map_err(|e| because(e.to_string()))?;
        match tokio::time::timeout(timeout, Pin::new(&mut stream).accept()).await {
            // Under DTLS a wrong key ends so: records that fail to decrypt are dropped, not
            // answered (RFC 6347 clause 4.1.2.7).
            Err(_) => {
                return Err(because(
                    "handshake timed out (under DTLS, also what a wrong key looks like)".into(),
                ))
            }
            Ok(Err(e)) => return Err(because(m2m_security::tls::handshake_reason(&e))),
            Ok(Ok(())) => {}
        }
        let ssl = stream.ssl();
        let proof = m2m_security::tls::association_of(ssl)
            .ok_or_else(|| because("the handshake authenticated nothing".into()))?;
        let association = self.binder.bind(proof, ssl, peer).map_err(because)?;
        Ok((stream, association))
    }
}

enum Refused {
    Because(String),
}

/// The client side: one datagram association with a server (`coap://` plain, `coaps://` DTLS).
pub struct DatagramChannel {
    inner: ChannelIo,
}

enum ChannelIo {
    Plain(UdpSocket),
    Dtls(Box<SslStream<ClientPipe>>),
}

/// A connected UDP socket as the byte stream of a DTLS client.
struct ClientPipe {
    sock: UdpSocket,
    tick: Option<tokio::time::Interval>,
}

impl AsyncRead for ClientPipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.sock.poll_recv(cx, buf) {
            Poll::Pending => {
                if let Some(tick) = &mut this.tick {
                    while tick.poll_tick(cx).is_ready() {}
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for ClientPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().sock.poll_send(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

async fn connected_socket(server: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(server).await?;
    Ok(sock)
}

impl DatagramChannel {
    /// A plain UDP channel to `server` (`coap://`).
    pub async fn plain(server: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            inner: ChannelIo::Plain(connected_socket(server).await?),
        })
    }

    /// A DTLS 1.2 association with `server` (`coaps://`), the server checked against `check` as
    /// for TLS ([`crate::connect`]).
    pub async fn dtls(
        context: &SslContext,
        server: SocketAddr,
        check: &crate::PeerCheck,
        timeout: Duration,
    ) -> Result<Self, String> {
        let sock = connected_socket(server)
            .await
            .map_err(|e| format!("cannot open a UDP socket to {server}: {e}"))?;
        Self::dtls_over(sock, context, check, timeout).await
    }

    /// The same over a socket of the caller's, already connected to the server.
    pub async fn dtls_over(
        sock: UdpSocket,
        context: &SslContext,
        check: &crate::PeerCheck,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut tick = tokio::time::interval(RETRANSMIT_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pipe = ClientPipe {
            sock,
            tick: Some(tick),
        };
        let mut stream = crate::connect(context, pipe, check, timeout)
            .await
            .map_err(|e| e.replacen("TLS handshake", "DTLS handshake", 1))?;
        stream.get_mut().tick = None;
        Ok(Self {
            inner: ChannelIo::Dtls(Box::new(stream)),
        })
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            ChannelIo::Plain(sock) => sock.send(msg).await.map(|_| ()),
            ChannelIo::Dtls(stream) => stream.write_all(msg).await,
        }
    }

    /// The next message within `timeout`; `Ok(None)` when none came.
    pub async fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let n = match &mut self.inner {
            ChannelIo::Plain(sock) => {
                match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
                    Err(_) => return Ok(None),
                    Ok(r) => r?,
                }
            }
            ChannelIo::Dtls(stream) => {
                match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
                    Err(_) => return Ok(None),
                    Ok(Ok(0)) => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the server ended the association",
                        ))
                    }
                    Ok(r) => r?,
                }
            }
        };
        buf.truncate(n);
        Ok(Some(buf))
    }

    /// Ends a DTLS association with close_notify.
    pub async fn close(&mut self) {
        if let ChannelIo::Dtls(stream) = &mut self.inner {
            let _ = stream.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dtls_client_hello_opens_a_session() {
        let mut hello = vec![0u8; 60];
        hello[0] = 22;
        hello[1] = 0xFE;
        hello[2] = 0xFD;
        hello[13] = 1;
        assert!(is_client_hello(&hello));
        let mut app = hello.clone();
        app[0] = 23;
        assert!(!is_client_hello(&app));
        let mut server_hello = hello.clone();
        server_hello[13] = 2;
        assert!(!is_client_hello(&server_hello));
        let mut tls = hello.clone();
        tls[1] = 3;
        tls[2] = 3;
        assert!(!is_client_hello(&tls));
        assert!(!is_client_hello(&hello[..20]));
    }

    #[test]
    fn the_cookie_of_a_client_hello_is_found_after_the_session_id() {
        let mut hello = vec![0u8; 13 + 12 + 2 + 32];
        hello[0] = 22;
        hello[1] = 0xFE;
        hello[2] = 0xFD;
        hello[13] = 1;
        hello.push(3); // session id of 3 bytes
        hello.extend_from_slice(&[9, 9, 9]);
        hello.push(4); // cookie of 4 bytes
        hello.extend_from_slice(&[1, 2, 3, 4]);
        hello.extend_from_slice(&[0, 2, 0xC0, 0xA8, 1, 0]); // one suite, null compression
        assert_eq!(client_hello_cookie(&hello), Some(&[1u8, 2, 3, 4][..]));
        let mut fragment = hello.clone();
        fragment[21] = 1; // a later fragment: no cookie read from it
        assert_eq!(client_hello_cookie(&fragment), None);
        hello[13] = 2;
        assert_eq!(client_hello_cookie(&hello), None);
    }
}
