//! Protection of a multicast group fan-out (seeds/004 clause 6.1.2.2.3; TS-0001 group fan-out
//! over the CoAP binding, TS-0008 Annex B): DTLS cannot protect a datagram with one sender and
//! many receivers, so the request primitive itself is protected with the group key that reached
//! each member end to end (seeds/001 clause 5.1, [`super::group_message`]).
//!
//! The format: the group hosting CSE signs the primitive with its own P-256 key (JWS ES256, header
//! `grp` = the group key ID, `snd` = the sender's CSE-ID, `seq` = its sequence number), then
//! encrypts the JWS under the group key (JWE, `cty` "JOSE"), as a sealed group command is. What it
//! gives:
//! - confidentiality: only holders of the current group key read it; a member that left gets no
//!   later key (the issuer rotates the key and seals it for the remaining members only);
//! - origin authentication: the sender's signature, over the group it names, so a member cannot
//!   forge a fan-out and a fan-out for one group cannot be replayed into another;
//! - replay protection: `seq` strictly increases per sender (microseconds of the sender's clock,
//!   at least one more than the last), and each receiver keeps a window per (group, sender)
//!   ([`ReplayWindow`]): the last [`WINDOW`] numbers accepted, whatever their spacing (a clock in
//!   microseconds jumps by thousands between two fan-outs, which a bitmap over consecutive values,
//!   as RFC 6347 clause 4.1.2.6 keeps, would turn into refusals of any reordered datagram); a
//!   number seen before, or at or below the oldest one the window let go, is refused.
//!
//! Limits: who talks to the group is not hidden (the datagram's addresses); a receiver that
//! restarts forgets its windows and would accept a replay of a datagram younger than the window's
//! age bound ([`MAX_AGE`]), which is why the sequence number is a clock and older ones are refused.

use crate::e2e::group_message::{open_sealed, seal_signed, verify_for_group, GroupKeyMgmt};
use crate::e2e::jose::{self, EcKeyPair, EcPublicKey, HeaderParams, SymmetricKey};
use chrono::{DateTime, Utc};
use m2m_core::{M2mError, ResponseStatusCode as Rsc};
use serde_json::Value;
use std::collections::HashMap;
use zeroize::Zeroizing;

/// JWS header parameter naming the sending CSE.
pub const SENDER_PARAM: &str = "snd";
/// JWS header parameter with the sender's sequence number.
pub const SEQUENCE_PARAM: &str = "seq";
/// How many of the latest accepted sequence numbers a window remembers: a datagram reordered
/// behind fewer than this many later ones is still accepted once.
pub const WINDOW: usize = 64;
/// A sequence number is microseconds of the sender's clock: one older than this (relative to
/// the receiver's clock) is refused even by a receiver with no window yet.
pub const MAX_AGE_MICROS: i64 = 5 * 60 * 1_000_000;
/// [`MAX_AGE_MICROS`] as a duration, for documentation.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

fn refused(why: impl Into<String>) -> M2mError {
    M2mError::new(Rsc::OriginatorNotAuthenticated, why)
}

/// The sender's side: its key, its CSE-ID, its sequence numbers.
pub struct Sender {
    key: EcKeyPair,
    id: String,
    last: u64,
}

impl Sender {
    pub fn new(key: EcKeyPair, id: impl Into<String>) -> Self {
        Self {
            key,
            id: id.into(),
            last: 0,
        }
    }

    /// The next sequence number: the clock in microseconds, at least one more than the last, so
    /// it keeps increasing across restarts as long as the clock does.
    fn next_seq(&mut self, now: DateTime<Utc>) -> u64 {
        let now = u64::try_from(now.timestamp_micros()).unwrap_or(0);
        self.last = now.max(self.last + 1);
        self.last
    }

    /// Protects one fan-out datagram's primitive for the group of `group_key`, sent at `now`.
    pub fn seal(
        &mut self,
        primitive: &[u8],
        group_key: &SymmetricKey,
        mgmt: GroupKeyMgmt,
        now: DateTime<Utc>,
    ) -> Result<String, M2mError> {
        let mut h = HeaderParams::new();
        h.insert(SENDER_PARAM.into(), self.id.clone().into());
        h.insert(SEQUENCE_PARAM.into(), self.next_seq(now).into());
        seal_signed(primitive, &self.key, h, group_key, mgmt, "fan-out")
    }
}

/// The anti-replay window of one (group, sender) at a receiver: the latest [`WINDOW`] sequence
/// numbers accepted, and the floor at or below which every number is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Everything at or below is refused (the numbers the window let go, and older).
    floor: u64,
    accepted: std::collections::BTreeSet<u64>,
}

impl ReplayWindow {
    /// Accepts `seq` once: refused when seen before or at or below the floor.
    pub fn accept(&mut self, seq: u64) -> Result<(), M2mError> {
        if !self.accepted.is_empty() && seq <= self.floor {
            return Err(refused("fan-out rejected: older than the replay window"));
        }
        if !self.accepted.insert(seq) {
            return Err(refused("fan-out rejected: a replay"));
        }
        if self.accepted.len() > WINDOW {
            if let Some(oldest) = self.accepted.pop_first() {
                self.floor = oldest;
            }
        }
        Ok(())
    }
}

/// What a member opened.
#[derive(Debug)]
pub struct Opened {
    pub sender: String,
    pub seq: u64,
    pub primitive: Zeroizing<Vec<u8>>,
}

/// A member's side: the windows of every (group, sender) it heard from.
#[derive(Default)]
pub struct Receiver {
    windows: HashMap<(String, String), ReplayWindow>,
}

impl Receiver {
    /// Forgets the windows of the group key `kid` (replaced or left: nothing opens under it
    /// any more).
    pub fn forget(&mut self, kid: &str) {
        self.windows.retain(|(k, _), _| k != kid);
    }

    /// Decrypts with the group key, verifies the sender's signature (the sender's public key by
    /// its CSE-ID from `senders`), checks the group, the age (against `now`) and the replay
    /// window.
    pub fn open(
        &mut self,
        sealed: &str,
        group_key: &SymmetricKey,
        mgmt: GroupKeyMgmt,
        senders: impl Fn(&str) -> Option<EcPublicKey>,
        now: DateTime<Utc>,
    ) -> Result<Opened, M2mError> {
        let jws = open_sealed(sealed, group_key, mgmt, "fan-out")?;
        // Whose key verifies it is named inside, read before the signature is checked.
        let fail = |e: jose::JoseError| e.to_m2m("fan-out rejected");
        let parts = jose::split_compact(&jws, 3, "JWS").map_err(fail)?;
        let header = jose::decode_header(parts[0]).map_err(fail)?;
        let sender = header
            .get(SENDER_PARAM)
            .and_then(Value::as_str)
            .ok_or_else(|| refused("fan-out rejected: no sender"))?
            .to_owned();
        let key = senders(&sender).ok_or_else(|| refused("fan-out rejected: unknown sender"))?;
        let verified = verify_for_group(&jws, group_key, &key, "fan-out")?;
        let seq = verified
            .header
            .get(SEQUENCE_PARAM)
            .and_then(Value::as_u64)
            .ok_or_else(|| refused("fan-out rejected: no sequence number"))?;
        let now = now.timestamp_micros();
        if i64::try_from(seq).map_or(true, |s| now.saturating_sub(s) > MAX_AGE_MICROS) {
            return Err(refused("fan-out rejected: too old"));
        }
        let window = self
            .windows
            .entry((group_key.kid().to_owned(), sender.clone()))
            .or_default();
        window.accept(seq)?;
        Ok(Opened {
            sender,
            seq,
            primitive: verified.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Secret;

    fn group(kid: &str, byte: u8) -> SymmetricKey {
        SymmetricKey::new(kid, Secret::new(vec![byte; 16]))
    }

    #[test]
    fn the_window_accepts_each_number_once_and_out_of_order_within_it() {
        let mut w = ReplayWindow::default();
        // Microsecond clocks: far apart, and one arrives late.
        for seq in [1_000_000, 1_003_000, 1_001_500, 1_900_000, 1_002_000] {
            w.accept(seq).unwrap_or_else(|e| panic!("{seq}: {}", e.dbg));
        }
        for seq in [1_000_000, 1_001_500, 1_003_000, 1_900_000, 1_002_000] {
            let e = w.accept(seq).unwrap_err();
            assert!(e.dbg.contains("a replay"), "{seq} twice: {}", e.dbg);
        }
        // WINDOW later numbers push the oldest out: they, and anything older, are refused.
        for i in 0..WINDOW as u64 {
            w.accept(2_000_000 + i * 1_000).unwrap();
        }
        for seq in [1_000_000, 1_001_500, 999, 1_002_001] {
            let e = w.accept(seq).unwrap_err();
            assert!(
                e.dbg.contains("older than the replay window"),
                "{seq}: {}",
                e.dbg
            );
        }
        // A late one among the latest WINDOW, not seen yet, still opens once.
        w.accept(2_000_500).unwrap();
        assert!(w.accept(2_000_500).is_err());
    }

    #[test]
    fn an_old_datagram_is_refused_even_without_a_window() {
        let gw = EcKeyPair::generate("gw").unwrap();
        let senders = |_: &str| Some(gw.public_key());
        let mut sender = Sender::new(EcKeyPair::from_jwk(&gw.to_jwk()).unwrap(), "/mn-cse");
        let key = group("grp-1", 7);
        let then = Utc::now() - chrono::Duration::minutes(6);
        let old = sender.seal(b"x", &key, GroupKeyMgmt::Dir, then).unwrap();
        let e = Receiver::default()
            .open(&old, &key, GroupKeyMgmt::Dir, senders, Utc::now())
            .unwrap_err();
        assert!(e.dbg.contains("too old"), "{}", e.dbg);
    }

    #[test]
    fn members_open_once_others_and_replays_are_refused() {
        let gw = EcKeyPair::generate("gw").unwrap();
        let senders = |id: &str| (id == "/mn-cse").then(|| gw.public_key());
        let mut sender = Sender::new(EcKeyPair::from_jwk(&gw.to_jwk()).unwrap(), "/mn-cse");
        let key = group("grp-1", 7);
        let sealed = sender
            .seal(b"{\"op\":1}", &key, GroupKeyMgmt::Dir, Utc::now())
            .unwrap();
        let mut member = Receiver::default();
        let opened = member
            .open(&sealed, &key, GroupKeyMgmt::Dir, senders, Utc::now())
            .unwrap();
        assert_eq!(opened.sender, "/mn-cse");
        assert_eq!(&*opened.primitive, b"{\"op\":1}");
        // The same datagram again: a replay.
        let again = member
            .open(&sealed, &key, GroupKeyMgmt::Dir, senders, Utc::now())
            .unwrap_err();
        assert!(again.dbg.contains("replay"), "{}", again.dbg);
        // Another member has its own window: it opens it once.
        let mut other = Receiver::default();
        other
            .open(&sealed, &key, GroupKeyMgmt::Dir, senders, Utc::now())
            .unwrap();
        // A later datagram opens; sequence numbers increase.
        let later = sender
            .seal(b"2", &key, GroupKeyMgmt::Dir, Utc::now())
            .unwrap();
        let o2 = member
            .open(&later, &key, GroupKeyMgmt::Dir, senders, Utc::now())
            .unwrap();
        assert!(o2.seq > opened.seq);
        // A non-member (another key, or a former member holding the previous version) reads nothing.
        for wrong in [group("grp-1", 8), group("grp-2", 7)] {
            assert!(Receiver::default()
                .open(&later, &wrong, GroupKeyMgmt::Dir, senders, Utc::now())
                .is_err());
        }
        // An unknown sender, or a member signing with its own key, is not the group hosting CSE.
        let rogue = EcKeyPair::generate("rogue").unwrap();
        let mut forger = Sender::new(rogue, "/mn-cse");
        let forged = forger
            .seal(b"3", &key, GroupKeyMgmt::Dir, Utc::now())
            .unwrap();
        assert!(member
            .open(&forged, &key, GroupKeyMgmt::Dir, senders, Utc::now())
            .is_err());
        let mut stranger = Sender::new(EcKeyPair::generate("s").unwrap(), "/other");
        let from_other = stranger
            .seal(b"4", &key, GroupKeyMgmt::Dir, Utc::now())
            .unwrap();
        let e = member
            .open(&from_other, &key, GroupKeyMgmt::Dir, senders, Utc::now())
            .unwrap_err();
        assert!(e.dbg.contains("unknown sender"), "{}", e.dbg);
        // A refused forgery did not move the window: the genuine next one still opens.
        let next = sender
            .seal(b"5", &key, GroupKeyMgmt::KeyWrap, Utc::now())
            .unwrap();
        member
            .open(&next, &key, GroupKeyMgmt::KeyWrap, senders, Utc::now())
            .unwrap();
    }
}
