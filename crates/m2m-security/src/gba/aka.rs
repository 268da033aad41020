//! UMTS AKA on MILENAGE (3GPP TS 33.102 clause 6.3), as GBA's Ub bootstrapping runs it (TS 33.220
//! clause 4.5.2): the HSS's authentication vector (RAND, XRES, CK, IK, AUTN), the USIM's check of
//! AUTN (MAC-A, then the freshness of SQN), and resynchronisation with AUTS when the USIM's SQN
//! is ahead.
//!
//! SQN freshness (TS 33.102 Annex C, simplified to one counter): the USIM accepts an SQN greater
//! than the highest it accepted, by at most [`MAX_SQN_STEP`]; anything else is a synchronisation
//! failure answered with AUTS, from which the HSS learns the USIM's SQN and continues above it.

use super::milenage::{Block, Milenage};
use std::fmt;
use zeroize::Zeroizing;

/// The largest SQN (48 bits, TS 33.102 clause 6.3.2).
pub const MAX_SQN: u64 = (1 << 48) - 1;

/// How far ahead of the USIM's highest accepted SQN a fresh one may be (TS 33.102 Annex C.2.2's
/// Δ, here 2^28).
pub const MAX_SQN_STEP: u64 = 1 << 28;

/// The AMF of a resynchronisation's MAC-S: all zero (TS 33.102 clause 6.3.3).
const RESYNC_AMF: [u8; 2] = [0, 0];

/// An authentication vector of the HSS for one RAND.
pub struct Vector {
    pub rand: Block,
    pub xres: [u8; 8],
    pub ck: Zeroizing<Block>,
    pub ik: Zeroizing<Block>,
    /// AUTN = (SQN xor AK) || AMF || MAC-A.
    pub autn: Block,
}

impl fmt::Debug for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vector")
            .field("rand", &hex::encode(self.rand))
            .finish_non_exhaustive()
    }
}

/// What the USIM answers a challenge with.
pub struct Answer {
    pub res: [u8; 8],
    pub ck: Zeroizing<Block>,
    pub ik: Zeroizing<Block>,
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Answer(RES, CK, IK redacted)")
    }
}

/// Why the USIM refused a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// AUTN's MAC-A is not the network's: the challenge did not come from the subscriber's HSS.
    MacFailure,
    /// AUTN is authentic but its SQN is not fresh (a replay, or the HSS is behind): AUTS lets
    /// the HSS resynchronise.
    SyncFailure { auts: [u8; 14] },
}

fn sqn_bytes(sqn: u64) -> [u8; 6] {
    let b = sqn.to_be_bytes();
    b[2..].try_into().expect("6 bytes")
}

fn sqn_value(b: &[u8; 6]) -> u64 {
    let mut x = [0u8; 8];
    x[2..].copy_from_slice(b);
    u64::from_be_bytes(x)
}

fn xor6(a: &[u8; 6], b: &[u8; 6]) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// The HSS's side: an authentication vector for `sqn` (at most [`MAX_SQN`]: a larger one is
/// cut to 48 bits, which the caller must not let happen).
pub fn vector(m: &Milenage, rand: Block, sqn: u64, amf: [u8; 2]) -> Vector {
    debug_assert!(sqn <= MAX_SQN, "SQN is 48 bits");
    let sqn = sqn_bytes(sqn & MAX_SQN);
    let mac_a = m.f1(&rand, &sqn, &amf);
    let o = m.f2345(&rand);
    let mut autn = [0u8; 16];
    autn[..6].copy_from_slice(&xor6(&sqn, &o.ak));
    autn[6..8].copy_from_slice(&amf);
    autn[8..].copy_from_slice(&mac_a);
    Vector {
        rand,
        xres: o.res,
        ck: o.ck,
        ik: o.ik,
        autn,
    }
}

/// The USIM's side: checks AUTN, then the freshness of its SQN against `highest` (the highest
/// SQN accepted so far, updated on success).
pub fn authenticate(
    m: &Milenage,
    rand: &Block,
    autn: &Block,
    highest: &mut u64,
) -> Result<Answer, Refusal> {
    let o = m.f2345(rand);
    let concealed: [u8; 6] = autn[..6].try_into().expect("6 bytes");
    let amf: [u8; 2] = autn[6..8].try_into().expect("2 bytes");
    let sqn = xor6(&concealed, &o.ak);
    let mac: [u8; 8] = autn[8..].try_into().expect("8 bytes");
    let xmac = m.f1(rand, &sqn, &amf);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..], &xmac[..])) {
        return Err(Refusal::MacFailure);
    }
    let value = sqn_value(&sqn);
    if value <= *highest || value - *highest > MAX_SQN_STEP {
        return Err(Refusal::SyncFailure {
            auts: auts(m, rand, *highest),
        });
    }
    *highest = value;
    Ok(Answer {
        res: o.res,
        ck: o.ck,
        ik: o.ik,
    })
}

/// AUTS = (SQN_MS xor AK*) || MAC-S, MAC-S = f1*(SQN_MS, AMF 0000) (TS 33.102 clause 6.3.3).
fn auts(m: &Milenage, rand: &Block, sqn_ms: u64) -> [u8; 14] {
    let sqn = sqn_bytes(sqn_ms);
    let ak_star = m.f5_star(rand);
    let mut out = [0u8; 14];
    out[..6].copy_from_slice(&xor6(&sqn, &ak_star));
    out[6..].copy_from_slice(&m.f1_star(rand, &sqn, &RESYNC_AMF));
    out
}

/// The HSS's side of a resynchronisation: the USIM's SQN from AUTS, if its MAC-S is authentic.
pub fn resynchronise(m: &Milenage, rand: &Block, auts: &[u8; 14]) -> Option<u64> {
    let concealed: [u8; 6] = auts[..6].try_into().ok()?;
    let sqn = xor6(&concealed, &m.f5_star(rand));
    let mac: [u8; 8] = auts[6..].try_into().ok()?;
    let xmac = m.f1_star(rand, &sqn, &RESYNC_AMF);
    bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..], &xmac[..])).then(|| sqn_value(&sqn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set1() -> (Milenage, Block) {
        let k: Block = hex::decode("465b5ce8b199b49faa5f0a2ee238a6bc")
            .unwrap()
            .try_into()
            .unwrap();
        let opc: Block = hex::decode("cd63cb71954a9f4e48a5994e37a02baf")
            .unwrap()
            .try_into()
            .unwrap();
        let rand: Block = hex::decode("23553cbe9637a89d218ae64dae47bf35")
            .unwrap()
            .try_into()
            .unwrap();
        (Milenage::new(k, opc), rand)
    }

    #[test]
    fn the_vector_of_test_set_1_and_the_usim_accepting_it_once() {
        let (m, rand) = set1();
        let sqn = 0xff9bb4d0b607;
        let v = vector(&m, rand, sqn, [0xb9, 0xb9]);
        // AUTN of TS 35.208 test set 1: (SQN xor AK) || AMF || MAC-A.
        assert_eq!(hex::encode(v.autn), "55f328b43577b9b94a9ffac354dfafb3");
        let mut highest = sqn - 1;
        let a = authenticate(&m, &rand, &v.autn, &mut highest).unwrap();
        assert_eq!(a.res, v.xres);
        assert_eq!(*a.ck, *v.ck);
        assert_eq!(highest, sqn);
        // The same challenge again is a replay: refused, and AUTS tells the HSS where the USIM is.
        let Err(Refusal::SyncFailure { auts }) = authenticate(&m, &rand, &v.autn, &mut highest)
        else {
            panic!("a replay was accepted");
        };
        assert_eq!(resynchronise(&m, &rand, &auts), Some(sqn));
        // The HSS continues above it: accepted.
        let v2 = vector(&m, rand, sqn + 1, [0xb9, 0xb9]);
        assert!(authenticate(&m, &rand, &v2.autn, &mut highest).is_ok());
    }

    #[test]
    fn a_forged_or_stale_challenge_is_refused() {
        let (m, rand) = set1();
        let v = vector(&m, rand, 100, [0x80, 0x00]);
        let mut highest = 50;
        // Another key's challenge, and a flipped bit of MAC-A or of SQN: MAC failure.
        let other = Milenage::new([1; 16], [2; 16]);
        let forged = vector(&other, rand, 100, [0x80, 0x00]);
        assert_eq!(
            authenticate(&m, &rand, &forged.autn, &mut highest).unwrap_err(),
            Refusal::MacFailure
        );
        for i in [0, 5, 6, 8, 15] {
            let mut autn = v.autn;
            autn[i] ^= 1;
            assert_eq!(
                authenticate(&m, &rand, &autn, &mut highest).unwrap_err(),
                Refusal::MacFailure,
                "bit of octet {i}"
            );
        }
        assert_eq!(highest, 50, "nothing accepted");
        // Too far ahead, or behind: synchronisation failure, and a forged AUTS tells the HSS nothing.
        let far = vector(&m, rand, 50 + MAX_SQN_STEP + 1, [0x80, 0x00]);
        let Err(Refusal::SyncFailure { mut auts }) =
            authenticate(&m, &rand, &far.autn, &mut highest)
        else {
            panic!("a far SQN was accepted");
        };
        assert_eq!(resynchronise(&m, &rand, &auts), Some(50));
        auts[13] ^= 1;
        assert_eq!(resynchronise(&m, &rand, &auts), None);
        let behind = vector(&m, rand, 40, [0x80, 0x00]);
        assert!(matches!(
            authenticate(&m, &rand, &behind.autn, &mut highest),
            Err(Refusal::SyncFailure { .. })
        ));
        // Secrets stay out of Debug.
        let shown = format!("{v:?}");
        assert!(!shown.contains(&hex::encode(v.xres)) && !shown.contains(&hex::encode(*v.ck)));
    }
}
