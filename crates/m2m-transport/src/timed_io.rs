//! Header-read and idle timeouts on a connection's byte stream, below the HTTP server: a request
//! head must arrive complete within the header-read timeout of its first byte (slow-header
//! clients), and a connection silent for the idle timeout is closed, before and between requests.
//! hyper's own header timer cannot tell "idle between requests" from "reading a head", so both
//! are kept here, where the bytes pass.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where the stream is in the request/response cycle, as far as its bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing read since the last response was written (or since the start).
    Between,
    /// Reading a request head; the last bytes seen, to find its end (CRLF CRLF, or LF LF).
    Head { tail: [u8; 3], deadline: Instant },
    /// The head is complete: a body, or the server at work.
    AfterHead,
}

/// A stream that fails reads with `TimedOut` once a deadline passes.
pub struct TimedIo<S> {
    inner: S,
    idle: Duration,
    header_read: Duration,
    phase: Phase,
    idle_deadline: Instant,
    timer: Pin<Box<Sleep>>,
    /// After an upgrade to a framed protocol (WebSocket): no request heads to time, and only
    /// what the peer sends keeps the connection from being idle.
    framed: bool,
}

impl<S> TimedIo<S> {
    pub fn new(inner: S, idle: Duration, header_read: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle,
            header_read,
            phase: Phase::Between,
            idle_deadline: now + idle,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            framed: false,
        }
    }

    /// The connection now carries frames of another protocol (a WebSocket after its handshake):
    /// the header-read timeout no longer applies, and the idle timeout counts from the last
    /// bytes the peer sent (what this side writes, pings included, keeps nothing alive).
    pub fn set_framed(&mut self) {
        self.framed = true;
        self.phase = Phase::AfterHead;
        self.idle_deadline = Instant::now() + self.idle;
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Scans newly read bytes: the head ends at the first blank line.
fn advance(phase: Phase, bytes: &[u8], header_read: Duration) -> Phase {
    let mut phase = match phase {
        Phase::Between if !bytes.is_empty() => Phase::Head {
            tail: [0; 3],
            deadline: Instant::now() + header_read,
        },
        other => other,
    };
    if let Phase::Head { tail, .. } = &mut phase {
        for &b in bytes {
            let ends = (b == b'\n' && tail[2] == b'\n')
                || (b == b'\n' && tail[2] == b'\r' && tail[1] == b'\n' && tail[0] == b'\r');
            if ends {
                return Phase::AfterHead;
            }
            *tail = [tail[1], tail[2], b];
        }
    }
    phase
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() {
                    if !this.framed {
                        this.phase = advance(this.phase, new, this.header_read);
                    }
                    this.idle_deadline = Instant::now() + this.idle;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let deadline = match this.phase {
                    Phase::Head { deadline, .. } => deadline.min(this.idle_deadline),
                    _ => this.idle_deadline,
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        match this.phase {
                            Phase::Head { .. } => "request head not received in time",
                            _ => "connection idle",
                        },
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 && !this.framed {
                // A response goes out: the next byte read starts a new request head.
                this.phase = Phase::Between;
                this.idle_deadline = Instant::now() + this.idle;
            }
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        let h = Duration::from_secs(1);
        let p = advance(Phase::Between, b"GET / HTTP/1.1\r\nHost: x\r\n", h);
        assert!(matches!(p, Phase::Head { .. }));
        assert_eq!(advance(p, b"\r\n", h), Phase::AfterHead);
        // Split anywhere, LF-only heads too.
        let p = advance(Phase::Between, b"GET / HTTP/1.1\r\n\r", h);
        assert_eq!(advance(p, b"\n", h), Phase::AfterHead);
        let p = advance(Phase::Between, b"GET / HTTP/1.1\n", h);
        assert_eq!(advance(p, b"\n", h), Phase::AfterHead);
        assert_eq!(advance(Phase::Between, b"", h), Phase::Between);
    }

    /// After an upgrade (WebSocket): frames are no request heads, and only what the peer sends
    /// keeps the connection alive, so a peer that stopped answering pings is gone at the idle
    /// timeout however much this side writes.
    #[tokio::test(start_paused = true)]
    async fn a_framed_connection_times_only_the_peers_silence() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = Box::pin(TimedIo::new(
            server,
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
        server.as_mut().get_mut().set_framed();
        let mut buf = [0u8; 64];
        // A frame, then 30 s of quiet: no head timer (5 s) applies.
        client.write_all(&[0x81, 0x00]).await.unwrap();
        assert!(server.read(&mut buf).await.unwrap() > 0);
        tokio::time::sleep(Duration::from_secs(30)).await;
        client.write_all(&[0x8a, 0x00]).await.unwrap();
        assert!(server.read(&mut buf).await.unwrap() > 0);
        // This side writes (pings) every 20 s; the peer says nothing: gone 60 s after its last
        // bytes, not kept alive by the writes.
        let (mut reader, mut writer) = tokio::io::split(server);
        let started = Instant::now();
        let reading = async {
            loop {
                if let Err(e) = reader.read(&mut buf).await {
                    return e;
                }
            }
        };
        let pinging = async {
            loop {
                tokio::time::sleep(Duration::from_secs(20)).await;
                writer.write_all(&[0x89, 0x00]).await.unwrap();
            }
        };
        let e = tokio::select! {
            e = reading => e,
            _ = pinging => unreachable!(),
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed().as_secs(), 60);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_times_out_and_an_idle_connection_too() {
        let (client, server) = tokio::io::duplex(1024);
        let mut server = Box::pin(TimedIo::new(
            server,
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
        let mut client = client;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = server.read(&mut buf).await.unwrap();
        assert!(n > 0);
        // The rest of the head never comes: 5 s, not 60.
        let started = Instant::now();
        let e = server.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed().as_secs(), 5);

        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = Box::pin(TimedIo::new(
            server,
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert!(n > 0);
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        // Idle between requests: the idle timeout, not the header one.
        let started = Instant::now();
        let e = server.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed().as_secs(), 60);
    }
}
