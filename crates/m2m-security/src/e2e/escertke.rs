//! End-to-End Certificate-based Key Establishment, ESCertKE (TS-0003 clauses 8.7 and 10.3.1): a TLS 1.2
//! handshake with certificates in the oneM2M profile, whose four flights travel as ESCertKE Messages
//! inside oneM2M primitives instead of over a socket; afterwards both ends export pairwiseE2EKey.
//!
//! The handshake is OpenSSL's own, run over an in-memory duplex buffer that the caller pumps:
//!
//! | message | sender | TLS 1.2 records |
//! | --- | --- | --- |
//! | 1 | Initiator ([`Initiator::start`]) | ClientHello |
//! | 2 | Terminator ([`Terminator::accept`]) | ServerHello, Certificate, ServerKeyExchange, CertificateRequest, ServerHelloDone |
//! | 3 | Initiator ([`Initiator::respond`]) | Certificate, ClientKeyExchange, CertificateVerify, ChangeCipherSpec, Finished |
//! | 4 | Terminator ([`Terminator::finish`]) | ChangeCipherSpec, Finished |
//!
//! The contexts come from [`crate::tls`] (ECDHE-ECDSA profile suites of clause 10.2.3, chain and profile
//! verified against the root of trust, mutual authentication required by the Terminator, no tickets and no
//! session cache, so every exchange is a full handshake). On success both ends export 48 bytes with
//! [`kdf::ESCERTKE_EXPORTER_LABEL`] and split them with [`kdf::export_split`]: pairwiseE2EKey = the last 32
//! bytes, pairwiseE2EKeyID = the first 16. This project uses pairwiseE2EKey directly as pairwiseESPrimKey
//! and `hexBinary(pairwiseE2EKeyID)` (32 upper-case hex digits, [`PairwiseE2eKey::key_id_text`]) as
//! pairwiseESPrimKeyID.

use crate::credentials::Secret;
use crate::kdf;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslStream};
use openssl::x509::X509;
use std::io::{Read, Write};

/// Why an ESCertKE step failed: the TLS reason (certificate verify failed, bad Finished, ...) or a
/// message that is not the expected flight. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscertkeError(pub String);

impl std::fmt::Display for EscertkeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EscertkeError {}

fn fail(reason: impl Into<String>) -> EscertkeError {
    EscertkeError(reason.into())
}

/// The result of a successful ESCertKE: pairwiseE2EKey, its ID and the peer's verified certificate.
pub struct PairwiseE2eKey {
    /// pairwiseE2EKey (32 bytes).
    pub key: Secret,
    /// pairwiseE2EKeyID (16 bytes).
    pub key_id: [u8; kdf::RELATIVE_ID_LEN],
    /// The peer's leaf certificate (its chain verified during the handshake).
    pub peer_certificate: X509,
}

impl PairwiseE2eKey {
    /// `hexBinary(pairwiseE2EKeyID)`: this project's pairwiseESPrimKeyID for an ESCertKE key.
    pub fn key_id_text(&self) -> String {
        kdf::hex_binary(&self.key_id)
    }
}

impl std::fmt::Debug for PairwiseE2eKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairwiseE2eKey")
            .field("key_id", &self.key_id_text())
            .finish_non_exhaustive()
    }
}

/// The in-memory "socket": what the peer sent (read by TLS) and what TLS wrote (the next message).
#[derive(Default)]
struct Pipe {
    inbound: Vec<u8>,
    read_pos: usize,
    outbound: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.inbound[self.read_pos..];
        if rest.is_empty() {
            // Nothing more from the peer yet: TLS reports WANT_READ and the caller sends a message.
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.read_pos += n;
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.outbound.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One side of the handshake over a [`Pipe`].
struct Handshake {
    stream: SslStream<Pipe>,
}

/// Where the handshake stands after a message was fed in.
#[derive(PartialEq, Eq)]
enum Progress {
    /// Waiting for the peer's next message.
    Waiting,
    Done,
}

impl Handshake {
    fn new(ssl: Ssl) -> Result<Self, EscertkeError> {
        let stream =
            SslStream::new(ssl, Pipe::default()).map_err(|e| fail(format!("TLS engine: {e}")))?;
        Ok(Self { stream })
    }

    /// Feeds the peer's message (empty for the first flight) and runs the handshake as far as it goes.
    fn feed(&mut self, message: &[u8]) -> Result<Progress, EscertkeError> {
        let pipe = self.stream.get_mut();
        pipe.inbound = message.to_vec();
        pipe.read_pos = 0;
        match self.stream.do_handshake() {
            Ok(()) => Ok(Progress::Done),
            Err(e) if e.code() == ErrorCode::WANT_READ => Ok(Progress::Waiting),
            Err(e) => Err(fail(handshake_reason(&e, self.stream.ssl()))),
        }
    }

    /// Takes what TLS wrote since the last call: the next ESCertKE Message.
    fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.stream.get_mut().outbound)
    }

    /// The whole message must have been consumed: trailing bytes would be unauthenticated.
    fn check_consumed(&mut self) -> Result<(), EscertkeError> {
        let pipe = self.stream.get_ref();
        if pipe.read_pos == pipe.inbound.len() {
            Ok(())
        } else {
            Err(fail(
                "the ESCertKE Message carries bytes after the handshake flight",
            ))
        }
    }

    /// Exports pairwiseE2EKey and pairwiseE2EKeyID (TS-0003 clause 10.3.1).
    fn export(&self) -> Result<PairwiseE2eKey, EscertkeError> {
        let ssl = self.stream.ssl();
        let mut out = zeroize::Zeroizing::new([0u8; kdf::EXPORT_LEN]);
        ssl.export_keying_material(&mut out[..], kdf::ESCERTKE_EXPORTER_LABEL, None)
            .map_err(|e| fail(format!("TLS exporter: {e}")))?;
        let (key, key_id) = kdf::export_split(&out);
        let peer_certificate = ssl
            .peer_certificate()
            .ok_or_else(|| fail("the peer presented no certificate"))?;
        Ok(PairwiseE2eKey {
            key,
            key_id,
            peer_certificate,
        })
    }
}

/// A short reason for a failed handshake: the certificate verdict if that was it, else OpenSSL's.
fn handshake_reason(e: &openssl::ssl::Error, ssl: &openssl::ssl::SslRef) -> String {
    let verdict = ssl.verify_result();
    if verdict != openssl::x509::X509VerifyResult::OK {
        return format!("certificate not accepted: {}", verdict.error_string());
    }
    match e.ssl_error() {
        Some(stack) => match stack.errors().first() {
            Some(first) => format!(
                "TLS handshake failed: {}",
                first.reason().unwrap_or("unknown reason")
            ),
            None => "TLS handshake failed".to_owned(),
        },
        None => "TLS handshake failed: the message is not the expected TLS flight".to_owned(),
    }
}

/// Whether an ESCertKE Message is Message 1: a TLS handshake record (type 22) whose first handshake
/// message is a ClientHello (type 1). Message 3 starts with the Initiator's Certificate (type 11), so a
/// Terminator tells a new exchange from the continuation of one without any extra identifier.
pub fn is_message1(message: &[u8]) -> bool {
    message.len() > 5 && message[0] == 22 && message[5] == 1
}

/// The Initiating End-Point (the ESPrim Originator).
pub struct Initiator {
    handshake: Handshake,
}

impl Initiator {
    /// Makes ESCertKE Message 1 (ClientHello). `ctx` is a client context with the Initiator's certificate,
    /// key and root of trust ([`crate::tls::client_context`]); `server_name`, when given, is checked
    /// against the Terminator's certificate (e.g. `id-in.m2m.example.com`).
    pub fn start(
        ctx: &SslContext,
        server_name: Option<&str>,
    ) -> Result<(Self, Vec<u8>), EscertkeError> {
        let mut ssl = crate::tls::client_ssl(ctx, server_name).map_err(fail)?;
        ssl.set_connect_state();
        let mut handshake = Handshake::new(ssl)?;
        if handshake.feed(&[])? == Progress::Done {
            return Err(fail("the handshake cannot end before message 2"));
        }
        let message1 = handshake.take_output();
        Ok((Self { handshake }, message1))
    }

    /// Processes ESCertKE Message 2 and makes Message 3.
    pub fn respond(&mut self, message2: &[u8]) -> Result<Vec<u8>, EscertkeError> {
        if self.handshake.feed(message2)? == Progress::Done {
            return Err(fail("the handshake cannot end before message 4"));
        }
        let message3 = self.handshake.take_output();
        if message3.is_empty() {
            return Err(fail("ESCertKE Message 2 is incomplete"));
        }
        Ok(message3)
    }

    /// Processes ESCertKE Message 4 and exports the key.
    pub fn finish(mut self, message4: &[u8]) -> Result<PairwiseE2eKey, EscertkeError> {
        if self.handshake.feed(message4)? != Progress::Done {
            return Err(fail("ESCertKE Message 4 is incomplete"));
        }
        self.handshake.check_consumed()?;
        self.handshake.export()
    }
}

/// The Terminating End-Point (the ESPrim Target). Between messages 2 and 3 the caller keeps it.
pub struct Terminator {
    handshake: Handshake,
}

impl Terminator {
    /// Processes ESCertKE Message 1 and makes Message 2. `ctx` is a server context with the Terminator's
    /// certificate and a root of trust for the Initiator's ([`crate::tls::server_context`]).
    pub fn accept(ctx: &SslContext, message1: &[u8]) -> Result<(Self, Vec<u8>), EscertkeError> {
        let mut ssl = Ssl::new(ctx).map_err(|e| fail(format!("TLS engine: {e}")))?;
        ssl.set_accept_state();
        let mut handshake = Handshake::new(ssl)?;
        if handshake.feed(message1)? == Progress::Done {
            return Err(fail("the handshake cannot end at message 1"));
        }
        let message2 = handshake.take_output();
        if message2.is_empty() {
            return Err(fail("ESCertKE Message 1 is incomplete"));
        }
        Ok((Self { handshake }, message2))
    }

    /// Processes ESCertKE Message 3; returns Message 4 and the key.
    pub fn finish(mut self, message3: &[u8]) -> Result<(Vec<u8>, PairwiseE2eKey), EscertkeError> {
        if self.handshake.feed(message3)? != Progress::Done {
            return Err(fail("ESCertKE Message 3 is incomplete"));
        }
        self.handshake.check_consumed()?;
        let key = self.handshake.export()?;
        Ok((self.handshake.take_output(), key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::{self, KeyType, LeafName, Validity};
    use crate::tls::{client_context, server_context, ClientTlsConfig, ServerTlsConfig};
    use std::path::Path;

    const SP: &str = "m2m.example.com";

    /// A CA in `dir/name-ca.pem` and a leaf `dir/name.pem`/`.key` for `leaf`.
    fn pki(dir: &Path, name: &str, leaf: LeafName) {
        let validity = Validity::days_from_now(30);
        let ca_key = certificates::generate_key(KeyType::P256).unwrap();
        let ca =
            certificates::make_ca(&format!("{name} CA"), &ca_key, validity, Some(SP), &[]).unwrap();
        let key = certificates::generate_key(KeyType::P256).unwrap();
        let cert = certificates::issue(&leaf, &key, &ca, &ca_key, validity, &[]).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), ca.to_pem().unwrap()).unwrap();
        let chain = [cert.to_pem().unwrap(), ca.to_pem().unwrap()].concat();
        std::fs::write(dir.join(format!("{name}.pem")), chain).unwrap();
        let pem = key.private_key_to_pem_pkcs8().unwrap();
        std::fs::write(dir.join(format!("{name}.key")), pem).unwrap();
    }

    fn contexts(dir: &Path, initiator_ca: &str) -> (SslContext, SslContext) {
        let p = |n: &str| dir.join(n);
        let server = server_context(&ServerTlsConfig {
            cipher_suites: crate::tls::CERTIFICATE_SUITES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            tls13: false,
            certificate_chain: Some(p("t.pem")),
            private_key: Some(p("t.key")),
            trusted_ca: Some(p(&format!("{initiator_ca}-ca.pem"))),
            psk: None,
            revocation: None,
        })
        .unwrap();
        let client = client_context(&ClientTlsConfig {
            certificate_chain: Some(p("i.pem")),
            private_key: Some(p("i.key")),
            trusted_ca: Some(p("t-ca.pem")),
            ..Default::default()
        })
        .unwrap();
        (server, client)
    }

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        pki(
            dir.path(),
            "t",
            LeafName::Cse {
                cse_id: m2m_core::CseId::parse("/id-in").unwrap(),
                naming: certificates::CseNaming::new(SP, "/id-in").unwrap(),
            },
        );
        pki(
            dir.path(),
            "i",
            LeafName::Ae {
                ae_id: "/Sesc1".into(),
                sp: SP.into(),
            },
        );
        dir
    }

    #[test]
    fn four_messages_give_both_ends_the_same_key() {
        let dir = setup();
        let (server, client) = contexts(dir.path(), "i");
        let (mut init, m1) = Initiator::start(&client, Some("id-in.m2m.example.com")).unwrap();
        assert!(is_message1(&m1));
        let (term, m2) = Terminator::accept(&server, &m1).unwrap();
        let m3 = init.respond(&m2).unwrap();
        assert!(!is_message1(&m3));
        let (m4, t_key) = term.finish(&m3).unwrap();
        let i_key = init.finish(&m4).unwrap();
        assert_eq!(t_key.key, i_key.key);
        assert_eq!(t_key.key_id, i_key.key_id);
        assert_eq!(t_key.key.len(), 32);
        assert_eq!(t_key.key_id_text().len(), 32);
        let naming = certificates::CseNaming::new(SP, "/id-in").unwrap();
        let who = certificates::identity_of(&t_key.peer_certificate, &naming).unwrap();
        assert_eq!(
            who.entity().map(|e| e.sp_relative()).as_deref(),
            Some("/Sesc1")
        );
        let dbg = format!("{t_key:?}");
        assert!(
            !crate::credentials::reveals(&dbg, t_key.key.expose()),
            "{dbg}"
        );
        // The handshake bytes never hold the key.
        let all = [m1, m2, m3, m4].concat();
        assert!(!all
            .windows(16)
            .any(|w| w == &t_key.key.expose()[..16] || w == t_key.key_id));
    }

    #[test]
    fn an_initiator_from_another_ca_is_refused() {
        let dir = setup();
        pki(
            dir.path(),
            "x",
            LeafName::Ae {
                ae_id: "/Sother".into(),
                sp: SP.into(),
            },
        );
        // The Terminator trusts only CA "x": the Initiator's certificate does not chain.
        let (server, client) = contexts(dir.path(), "x");
        let (mut init, m1) = Initiator::start(&client, None).unwrap();
        let (term, m2) = Terminator::accept(&server, &m1).unwrap();
        let m3 = init.respond(&m2).unwrap();
        let e = term.finish(&m3).expect_err("refused");
        assert!(e.0.contains("certificate"), "{e}");
    }

    #[test]
    fn garbage_replays_and_a_wrong_name_are_refused() {
        let dir = setup();
        let (server, client) = contexts(dir.path(), "i");
        assert!(Terminator::accept(&server, b"not TLS at all").is_err());
        assert!(Terminator::accept(&server, &[]).is_err());
        // Message 3 of one exchange fed to another exchange's Terminator.
        let (mut a, a1) = Initiator::start(&client, None).unwrap();
        let (ta, a2) = Terminator::accept(&server, &a1).unwrap();
        let a3 = a.respond(&a2).unwrap();
        let (_b, b1) = Initiator::start(&client, None).unwrap();
        let (tb, _b2) = Terminator::accept(&server, &b1).unwrap();
        assert!(tb.finish(&a3).is_err(), "a message 3 of another exchange");
        assert!(ta.finish(&a3).is_ok());
        // The Terminator's certificate names /id-in, not /id-other.
        let (mut c, c1) = Initiator::start(&client, Some("id-other.m2m.example.com")).unwrap();
        let (_tc, c2) = Terminator::accept(&server, &c1).unwrap();
        let e = c.respond(&c2).expect_err("wrong name");
        assert!(e.0.contains("certificate"), "{e}");
    }
}
