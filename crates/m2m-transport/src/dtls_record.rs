//! The record layer of an established DTLS 1.2 association under AES-128-CCM_8 (RFC 6347 clause
//! 4.1, RFC 5246 clauses 5, 6.2.3.3 and 6.3, RFC 6655), taken over from OpenSSL when its handshake
//! is done.
//!
//! Why: OpenSSL 3.0 holds two record buffers (about 36 KiB) per DTLS association for its whole
//! life, which makes ten thousand idle locks cost half a gigabyte. After the handshake an AEAD
//! association needs only its two keys and salts, the write sequence number and the replay window
//! of the peer's records: this module keeps those (under 200 bytes) and OpenSSL's state is freed.
//! The CBC suites (MAC-then-encrypt, whose padding check must be constant-time) stay with OpenSSL.
//!
//! The keys come from the master secret and both randoms as RFC 5246 clause 6.3 derives them
//! (PRF with SHA-256, the PRF of every profile suite); the nonce is the 4-byte implicit salt and
//! the 8-byte explicit part epoch || sequence number (what OpenSSL sends); the additional data is
//! epoch || sequence number || type || version || plaintext length. Records that fail to open are
//! dropped without an answer (RFC 6347 clause 4.1.2.7); each sequence number is accepted once, or
//! out of order within a 64-record window (clause 4.1.2.6).

use hmac::{Hmac, Mac};
use openssl::cipher::{Cipher, CipherRef};
use openssl::cipher_ctx::CipherCtx;
use openssl::ssl::SslRef;
use sha2::Sha256;
use std::fmt;
use std::sync::OnceLock;

/// DTLS 1.2 on the wire.
const VERSION: [u8; 2] = [0xFE, 0xFD];
const HEADER: usize = 13;
const EXPLICIT_NONCE: usize = 8;
const TAG: usize = 8;
const KEY: usize = 16;
const SALT: usize = 4;
/// The largest plaintext of one record (RFC 6347 clause 4.1: 2^14).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Sequence numbers are 48 bits; the association ends before they wrap.
const LAST_SEQ: u64 = (1 << 48) - 1;

/// Record content types (RFC 5246 clause 6.2.1).
pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;

/// The suites this layer takes over (OpenSSL names).
const CCM8_SUITES: [&str; 2] = ["PSK-AES128-CCM8", "ECDHE-ECDSA-AES128-CCM8"];

/// What one record of a datagram turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// Authenticated application data.
    Data(Vec<u8>),
    /// An authenticated alert (level, description).
    Alert(u8, u8),
    /// An authenticated handshake record of the current epoch: the client sent its Finished
    /// again (its whole last flight, whose epoch-0 records prove nothing), so it did not get the
    /// server's.
    Retransmission,
}

/// One record's header fields.
struct Header {
    ty: u8,
    version: [u8; 2],
    epoch: u16,
    seq: u64,
    len: usize,
}

fn header(d: &[u8]) -> Option<Header> {
    let h = d.get(..HEADER)?;
    Some(Header {
        ty: h[0],
        version: [h[1], h[2]],
        epoch: u16::from_be_bytes([h[3], h[4]]),
        seq: h[5..11].iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)),
        len: usize::from(u16::from_be_bytes([h[11], h[12]])),
    })
}

/// The records of a datagram: (header, whole record bytes); stops at a truncated one.
fn records(mut d: &[u8]) -> impl Iterator<Item = (Header, &[u8])> {
    std::iter::from_fn(move || {
        let h = header(d)?;
        let end = HEADER.checked_add(h.len)?;
        let rec = d.get(..end)?;
        d = &d[end..];
        Some((h, rec))
    })
}

/// The highest (epoch, sequence number) among the records of `datagram`, if it has any.
pub fn highest_record(datagram: &[u8]) -> Option<(u16, u64)> {
    records(datagram).map(|(h, _)| (h.epoch, h.seq)).max()
}

/// Whether `datagram` carries a record of epoch `epoch` or later.
pub fn has_epoch(datagram: &[u8], epoch: u16) -> bool {
    records(datagram).any(|(h, _)| h.epoch >= epoch)
}

/// The anti-replay window of RFC 6347 clause 4.1.2.6.
#[derive(Default)]
struct Window {
    highest: u64,
    /// Bit i: `highest - i` was accepted.
    seen: u64,
}

impl Window {
    fn is_fresh(&self, seq: u64) -> bool {
        if self.seen == 0 || seq > self.highest {
            return true;
        }
        let back = self.highest - seq;
        back < 64 && self.seen & (1 << back) == 0
    }

    fn accept(&mut self, seq: u64) {
        if self.seen == 0 {
            (self.highest, self.seen) = (seq, 1);
        } else if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
        } else {
            self.seen |= 1 << (self.highest - seq);
        }
    }
}

/// The keys of one direction.
struct Direction {
    key: zeroize::Zeroizing<[u8; KEY]>,
    salt: [u8; SALT],
}

impl Direction {
    fn nonce(&self, explicit: &[u8]) -> [u8; SALT + EXPLICIT_NONCE] {
        let mut n = [0u8; SALT + EXPLICIT_NONCE];
        n[..SALT].copy_from_slice(&self.salt);
        n[SALT..].copy_from_slice(explicit);
        n
    }
}

/// An association's record protection after its handshake (server side).
pub struct RecordLayer {
    read: Direction,
    write: Direction,
    epoch: u16,
    next_write_seq: u64,
    window: Window,
}

impl fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordLayer")
            .field("epoch", &self.epoch)
            .field("next_write_seq", &self.next_write_seq)
            .finish_non_exhaustive()
    }
}

/// TLS 1.2 PRF with SHA-256 (RFC 5246 clause 5): `n` bytes.
fn prf_sha256(
    secret: &[u8],
    label: &[u8],
    seed: &[u8],
    n: usize,
) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let key = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    let hmac = |parts: &[&[u8]]| {
        let mut m = key.clone();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes()
    };
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(n + 32));
    let mut a = hmac(&[label, seed]); // A(1)
    while out.len() < n {
        out.extend_from_slice(&hmac(&[&a, label, seed]));
        a = hmac(&[&a]);
    }
    out.truncate(n);
    Some(out)
}

/// AES-128-CCM, fetched from the provider once (an implicit fetch at every record costs more
/// than the record).
fn aes_128_ccm() -> &'static CipherRef {
    static FETCHED: OnceLock<Option<Cipher>> = OnceLock::new();
    match FETCHED.get_or_init(|| Cipher::fetch(None, "AES-128-CCM", None).ok()) {
        Some(c) => c,
        None => Cipher::aes_128_ccm(),
    }
}

impl RecordLayer {
    /// The record layer of the server side of `ssl`, whose DTLS 1.2 handshake just completed
    /// under a CCM_8 suite; its next record in `epoch` is `next_write_seq`. `None` for other
    /// suites (OpenSSL keeps those).
    pub fn take_over(ssl: &SslRef, epoch: u16, next_write_seq: u64) -> Option<Self> {
        let suite = ssl.current_cipher()?.name();
        if !CCM8_SUITES.contains(&suite) || ssl.version_str() != "DTLSv1.2" {
            return None;
        }
        let mut master = zeroize::Zeroizing::new([0u8; 48]);
        let mut randoms = [0u8; 64];
        if ssl.session()?.master_key(&mut master[..]) != 48
            || ssl.server_random(&mut randoms[..32]) != 32
            || ssl.client_random(&mut randoms[32..]) != 32
        {
            return None;
        }
        // key_block: client_write_key, server_write_key, client_write_IV, server_write_IV (no
        // MAC keys for AEAD suites).
        let kb = prf_sha256(&master[..], b"key expansion", &randoms, 2 * (KEY + SALT))?;
        let direction = |key_at: usize, salt_at: usize| {
            let mut key = zeroize::Zeroizing::new([0u8; KEY]);
            key.copy_from_slice(&kb[key_at..key_at + KEY]);
            let mut salt = [0u8; SALT];
            salt.copy_from_slice(&kb[salt_at..salt_at + SALT]);
            Direction { key, salt }
        };
        Some(Self {
            read: direction(0, 2 * KEY),
            write: direction(KEY, 2 * KEY + SALT),
            epoch,
            next_write_seq,
            window: Window::default(),
        })
    }

    /// The records of one datagram from the peer, each opened and checked against the replay
    /// window; records that do not open (or of another epoch or version) are left out.
    pub fn open(&mut self, datagram: &[u8]) -> Vec<Record> {
        let mut out = Vec::new();
        for (h, rec) in records(datagram) {
            // Records of an earlier epoch are unauthenticated (anyone can forge one): ignored.
            if h.epoch != self.epoch
                || h.version != VERSION
                || h.len < EXPLICIT_NONCE + TAG
                || !self.window.is_fresh(h.seq)
            {
                continue;
            }
            let body = &rec[HEADER..];
            let (explicit, rest) = body.split_at(EXPLICIT_NONCE);
            let (ciphertext, tag) = rest.split_at(rest.len() - TAG);
            let aad = additional_data(&rec[3..11], h.ty, ciphertext.len());
            let nonce = self.read.nonce(explicit);
            let Some(plain) = ccm_open(&self.read.key[..], &nonce, &aad, ciphertext, tag) else {
                continue;
            };
            self.window.accept(h.seq);
            match h.ty {
                APPLICATION_DATA => out.push(Record::Data(plain)),
                ALERT if plain.len() == 2 => out.push(Record::Alert(plain[0], plain[1])),
                HANDSHAKE => out.push(Record::Retransmission),
                _ => {}
            }
        }
        out
    }

    /// One record of type `ty` carrying `plain` (at most [`MAX_PLAINTEXT`] bytes); `None` once
    /// the sequence numbers are used up (the association must end).
    pub fn seal(&mut self, ty: u8, plain: &[u8]) -> Option<Vec<u8>> {
        if plain.len() > MAX_PLAINTEXT || self.next_write_seq > LAST_SEQ {
            return None;
        }
        let seq = self.next_write_seq;
        self.next_write_seq += 1;
        let mut epoch_seq = [0u8; 8];
        epoch_seq[..2].copy_from_slice(&self.epoch.to_be_bytes());
        epoch_seq[2..].copy_from_slice(&seq.to_be_bytes()[2..]);
        let aad = additional_data(&epoch_seq, ty, plain.len());
        let nonce = self.write.nonce(&epoch_seq);
        let (ciphertext, tag) = ccm_seal(&self.write.key[..], &nonce, &aad, plain)?;
        let len = u16::try_from(EXPLICIT_NONCE + ciphertext.len() + TAG).ok()?;
        let mut rec = Vec::with_capacity(HEADER + usize::from(len));
        rec.push(ty);
        rec.extend_from_slice(&VERSION);
        rec.extend_from_slice(&epoch_seq);
        rec.extend_from_slice(&len.to_be_bytes());
        rec.extend_from_slice(&epoch_seq);
        rec.extend_from_slice(&ciphertext);
        rec.extend_from_slice(&tag);
        Some(rec)
    }
}

/// AES-128-CCM with a 12-byte nonce and an 8-byte tag (RFC 6655: L = 3, M = 8), both set
/// explicitly: OpenSSL's CCM defaults to a 7-byte nonce.
/// `tag`: the tag to check when decrypting (CCM checks it inside the one update of the
/// ciphertext), `None` to encrypt.
fn ccm(key: &[u8], nonce: &[u8], aad: &[u8], len: usize, tag: Option<&[u8]>) -> Option<CipherCtx> {
    let mut c = CipherCtx::new().ok()?;
    let cipher = Some(aes_128_ccm());
    match tag {
        None => c.encrypt_init(cipher, None, None).ok()?,
        Some(_) => c.decrypt_init(cipher, None, None).ok()?,
    }
    c.set_iv_length(nonce.len()).ok()?;
    match tag {
        None => {
            c.set_tag_length(TAG).ok()?;
            c.encrypt_init(None, Some(key), Some(nonce)).ok()?;
        }
        Some(t) => {
            c.set_tag(t).ok()?;
            c.decrypt_init(None, Some(key), Some(nonce)).ok()?;
        }
    }
    c.set_data_len(len).ok()?;
    c.cipher_update(aad, None).ok()?;
    Some(c)
}

fn ccm_seal(key: &[u8], nonce: &[u8], aad: &[u8], plain: &[u8]) -> Option<(Vec<u8>, [u8; TAG])> {
    let mut c = ccm(key, nonce, aad, plain.len(), None)?;
    let mut out = Vec::with_capacity(plain.len() + 16);
    c.cipher_update_vec(plain, &mut out).ok()?;
    c.cipher_final_vec(&mut out).ok()?;
    let mut tag = [0u8; TAG];
    c.tag(&mut tag).ok()?;
    Some((out, tag))
}

fn ccm_open(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Option<Vec<u8>> {
    let mut c = ccm(key, nonce, aad, ciphertext.len(), Some(tag))?;
    let mut out = Vec::with_capacity(ciphertext.len() + 16);
    c.cipher_update_vec(ciphertext, &mut out).ok()?;
    Some(out)
}

/// epoch || sequence number || type || version || plaintext length (RFC 6347 clause 4.1.2.1).
fn additional_data(epoch_seq: &[u8], ty: u8, len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(epoch_seq);
    a[8] = ty;
    a[9..11].copy_from_slice(&VERSION);
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ssl::{
        HandshakeError, MidHandshakeSslStream, Ssl, SslContext, SslMethod, SslStream, SslVersion,
    };
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::io::{self, Read, Write};
    use std::rc::Rc;

    type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

    /// One end of an in-memory datagram link; what it writes is recorded.
    struct End {
        inbox: Queue,
        outbox: Queue,
        written: Rc<RefCell<Vec<Vec<u8>>>>,
    }

    impl Read for End {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.inbox.borrow_mut().pop_front() {
                Some(d) => {
                    buf[..d.len()].copy_from_slice(&d);
                    Ok(d.len())
                }
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    impl Write for End {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.outbox.borrow_mut().push_back(buf.to_vec());
            self.written.borrow_mut().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn context(server: bool, suite: &str) -> SslContext {
        let mut b = openssl::ssl::SslContextBuilder::new(SslMethod::dtls()).unwrap();
        b.set_min_proto_version(Some(SslVersion::DTLS1_2)).unwrap();
        b.set_max_proto_version(Some(SslVersion::DTLS1_2)).unwrap();
        b.set_cipher_list(suite).unwrap();
        b.set_options(openssl::ssl::SslOptions::NO_QUERY_MTU);
        if server {
            b.set_psk_server_callback(|_, _, key| {
                key[..16].copy_from_slice(&[7u8; 16]);
                Ok(16)
            });
        } else {
            b.set_psk_client_callback(|_, _, id, key| {
                id[..5].copy_from_slice(b"lock\0");
                key[..16].copy_from_slice(&[7u8; 16]);
                Ok(16)
            });
        }
        b.build()
    }

    fn step<S: Read + Write>(
        r: Result<SslStream<S>, HandshakeError<S>>,
    ) -> Result<SslStream<S>, MidHandshakeSslStream<S>> {
        match r {
            Ok(s) => Ok(s),
            Err(HandshakeError::WouldBlock(m)) => Err(m),
            Err(HandshakeError::Failure(m)) => panic!("handshake: {}", m.error()),
            Err(HandshakeError::SetupFailure(e)) => panic!("handshake setup: {e}"),
        }
    }

    /// A DTLS 1.2 PSK handshake between two OpenSSL ends in memory: (client, server, the
    /// datagrams the server wrote, the datagrams the client wrote).
    #[allow(clippy::type_complexity)]
    fn handshake(
        suite: &str,
    ) -> (
        SslStream<End>,
        SslStream<End>,
        Rc<RefCell<Vec<Vec<u8>>>>,
        Rc<RefCell<Vec<Vec<u8>>>>,
    ) {
        let (c2s, s2c): (Queue, Queue) = Default::default();
        let (sw, cw) = (Rc::default(), Rc::default());
        let client_end = End {
            inbox: Rc::clone(&s2c),
            outbox: Rc::clone(&c2s),
            written: Rc::clone(&cw),
        };
        let server_end = End {
            inbox: c2s,
            outbox: s2c,
            written: Rc::clone(&sw),
        };
        let ssl = |server: bool| {
            let mut ssl = Ssl::new(&context(server, suite)).unwrap();
            ssl.set_mtu(1200).unwrap();
            ssl
        };
        let mut c = step(ssl(false).connect(client_end));
        let mut s = step(ssl(true).accept(server_end));
        for _ in 0..20 {
            if let Err(m) = c {
                c = step(m.handshake());
            }
            if let Err(m) = s {
                s = step(m.handshake());
            }
            if c.is_ok() && s.is_ok() {
                break;
            }
        }
        match (c, s) {
            (Ok(c), Ok(s)) => (c, s, sw, cw),
            _ => panic!("no handshake"),
        }
    }

    fn next_seq(written: &[Vec<u8>]) -> u64 {
        written
            .iter()
            .filter_map(|d| highest_record(d))
            .filter(|(e, _)| *e == 1)
            .map(|(_, s)| s + 1)
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn records_pass_both_ways_with_openssl_after_the_take_over() {
        let (mut client, server, sw, cw) = handshake("PSK-AES128-CCM8");
        let mut layer = RecordLayer::take_over(server.ssl(), 1, next_seq(&sw.borrow())).unwrap();
        // The client's last flight: its epoch-0 records and its Finished (epoch 1) are
        // retransmission signals; the Finished opens (the keys are right) and enters the window,
        // so the same datagram again signals one record less.
        let last_flight: Vec<Vec<u8>> = cw
            .borrow()
            .iter()
            .filter(|d| has_epoch(d, 1))
            .cloned()
            .collect();
        assert_eq!(last_flight.len(), 1);
        assert_eq!(layer.open(&last_flight[0]), vec![Record::Retransmission]);
        assert!(
            layer.open(&last_flight[0]).is_empty(),
            "a replayed Finished"
        );
        // Epoch-0 records prove nothing: one forged from the flight's first record is ignored.
        let mut forged = last_flight[0].clone();
        forged[3..5].copy_from_slice(&[0, 0]);
        assert!(layer.open(&forged).is_empty());
        drop(server); // OpenSSL's server side is gone from here on.
        for msg in [&b"GET /door"[..], &[0u8; 1024][..]] {
            client.write_all(msg).unwrap();
            let d = cw.borrow().last().unwrap().clone();
            assert_eq!(layer.open(&d), vec![Record::Data(msg.to_vec())]);
            // The same record again: a replay, nothing.
            assert!(layer.open(&d).is_empty());
            // Altered: nothing.
            let mut bad = d.clone();
            let n = bad.len();
            bad[n - 1] ^= 1;
            assert!(layer.open(&bad).is_empty());
        }
        let reply = layer.seal(APPLICATION_DATA, b"2.05 locked").unwrap();
        client.get_mut().inbox.borrow_mut().push_back(reply);
        let mut buf = [0u8; 64];
        let n = client.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"2.05 locked");
        // close_notify from the client is an authenticated alert.
        client.shutdown().unwrap();
        let d = cw.borrow().last().unwrap().clone();
        assert_eq!(layer.open(&d), vec![Record::Alert(1, 0)]);
    }

    #[test]
    fn other_suites_stay_with_openssl() {
        let (_c, server, sw, _) = handshake("PSK-AES128-CBC-SHA256");
        assert!(RecordLayer::take_over(server.ssl(), 1, next_seq(&sw.borrow())).is_none());
    }

    #[test]
    fn the_window_takes_each_number_once() {
        let mut w = Window::default();
        for s in [5, 7, 6, 70, 20] {
            assert!(w.is_fresh(s), "{s}");
            w.accept(s);
        }
        for s in [5, 6, 7, 70, 20, 6] {
            assert!(!w.is_fresh(s), "{s} again");
        }
        assert!(!w.is_fresh(70 - 64), "behind the window");
        assert!(w.is_fresh(71));
    }

    #[test]
    fn the_prf_matches_a_published_test_vector() {
        // TLS 1.2 PRF (SHA-256) test vector (IETF TLS WG, "TLS 1.2 PRF test vectors").
        let secret = hex("9bbe436ba940f017b17652849a71db35");
        let seed = hex("a0ba9f936cda311827a6f796ffd5198c");
        let out = prf_sha256(&secret, b"test label", &seed, 100).unwrap();
        assert_eq!(
            &out[..16],
            &hex("e3f229ba727be17b8d122620557cd453")[..],
            "the first bytes of the published output"
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
