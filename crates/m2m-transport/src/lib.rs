//! One transport layer for every listener and every outgoing connection of the CSE, the MAF and the
//! MEF (TS-0003 clause 8.2: the security association is established here, before any binding
//! sees a byte).
//!
//! | piece | what it does | TS-0003 |
//! |---|---|---|
//! | [`acceptor`] | listeners: connection cap, first-byte wait, per-source handshake slots, handshake timeout, the service's [`Binder`] makes the association, one audit line, graceful shutdown | 8.2.1, 10.2 |
//! | [`timed_io`] | header-read and idle timeouts on the byte stream | |
//! | [`http`] | HTTP/1.1 (TS-0009) over an accepted connection | |
//! | [`connector`] | outgoing TLS: the server is checked against a [`PeerCheck`], always | 8.2.1 (Entity A) |
//! | [`datagram`] | UDP listeners for CoAP: plain, or DTLS 1.2 with HelloVerifyRequest cookies, the same caps, timeouts and binder | 10.2.1 |
//! | [`mqtt`] | an MQTT 3.1.1 client session (TS-0010 6.3) over an outgoing TLS connection: CONNECT, SUBSCRIBE, PUBLISH QoS 1, keep-alive | TS-0010 7.3 |
//!
//! A binding (HTTP, CoAP) receives a [`Connection`] or [`Session`] whose association is already
//! decided, and only translates bytes into request primitives; over MQTT the broker is the peer
//! ([`connect`] checks it) and the binding reads who sent a message from its topic.

#![forbid(unsafe_code)]

pub mod acceptor;
pub mod connector;
pub mod datagram;
pub mod dtls_record;
pub mod http;
pub mod mqtt;
pub mod timed_io;

pub use acceptor::{Binder, Connection, Listener, NoAssociation, Security, Server, Stream};
pub use connector::{connect, CertificateCheck, PeerCheck};
pub use datagram::{DatagramChannel, DatagramListener, Session, SessionIo};

use serde::{Deserialize, Serialize};

/// The limits of one listener. Every field has a default; the CSE, MAF and MEF configurations
/// embed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections open at once; more are closed as they arrive (one warning a second). The
    /// process also never accepts more than its open-files limit allows (less a reserve).
    pub max_connections: usize,
    /// A connection must start its handshake (first byte) and finish it within this time.
    pub handshake_timeout_ms: u64,
    /// Handshakes in flight per source address (silent connections do not count).
    pub max_handshakes_per_source: usize,
    /// A request head must arrive complete within this time of its first byte.
    pub header_read_timeout_ms: u64,
    /// A connection (or association) with no traffic for this long is closed.
    pub idle_timeout_ms: u64,
    /// On shutdown, open connections get this long to finish what they are doing.
    pub shutdown_grace_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            handshake_timeout_ms: 10_000,
            max_handshakes_per_source: 16,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 120_000,
            shutdown_grace_ms: 5_000,
        }
    }
}

impl Limits {
    /// Refuses limits that would refuse every connection (a zero count or time).
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("max_connections", self.max_connections as u64),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            (
                "max_handshakes_per_source",
                self.max_handshakes_per_source as u64,
            ),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        Ok(())
    }
}
