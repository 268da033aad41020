//! MILENAGE (3GPP TS 35.206): the authentication and key generation functions of a USIM and its
//! HSS, on AES-128 as the kernel. f1 (MAC-A), f1* (MAC-S), f2 (RES), f3 (CK), f4 (IK), f5 (AK)
//! and f5* (AK for resynchronisation), from the subscriber key K and the operator variant OPc.
//!
//! K, OPc, CK and IK are secrets: kept in zeroized memory, never shown by `Debug`.

use openssl::symm::{Cipher, Crypter, Mode};
use std::fmt;
use zeroize::Zeroizing;

/// One 128-bit block.
pub type Block = [u8; 16];

/// The rotations r1..r5 (in bytes: TS 35.206 gives them in bits, all multiples of 8) and the
/// constants c1..c5 (all zero but the last byte), clause 4.1.
const R: [usize; 5] = [8, 0, 4, 8, 12];
const C_LAST: [u8; 5] = [0, 1, 2, 4, 8];

/// The functions for one subscriber.
pub struct Milenage {
    k: Zeroizing<Block>,
    opc: Zeroizing<Block>,
}

impl fmt::Debug for Milenage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Milenage(K and OPc redacted)")
    }
}

/// What f2, f3, f4 and f5 give for one RAND.
pub struct Outputs {
    /// RES (XRES at the HSS), 64 bits.
    pub res: [u8; 8],
    /// The cipher key CK.
    pub ck: Zeroizing<Block>,
    /// The integrity key IK.
    pub ik: Zeroizing<Block>,
    /// The anonymity key AK, which conceals SQN in AUTN.
    pub ak: [u8; 6],
}

impl fmt::Debug for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Outputs(RES, CK, IK, AK redacted)")
    }
}

/// E_K(x): AES-128 of one block.
fn encrypt(k: &Block, x: &Block) -> Block {
    let mut c = Crypter::new(Cipher::aes_128_ecb(), Mode::Encrypt, k, None)
        .expect("AES-128-ECB is available in OpenSSL");
    c.pad(false);
    let mut out = Zeroizing::new([0u8; 32]);
    let n = c.update(x, &mut out[..]).expect("one whole block");
    debug_assert_eq!(n, 16);
    let mut block = [0u8; 16];
    block.copy_from_slice(&out[..16]);
    block
}

fn xor(a: &Block, b: &Block) -> Block {
    let mut out = [0u8; 16];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// Cyclic rotation towards the most significant bit by `bytes` bytes.
fn rot(x: &Block, bytes: usize) -> Block {
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = x[(i + bytes) % 16];
    }
    out
}

impl Milenage {
    pub fn new(k: Block, opc: Block) -> Milenage {
        Milenage {
            k: Zeroizing::new(k),
            opc: Zeroizing::new(opc),
        }
    }

    /// From the operator's OP rather than OPc.
    pub fn with_op(k: Block, op: &Block) -> Milenage {
        let opc = Self::opc(&k, op);
        Self::new(k, opc)
    }

    /// OPc = OP XOR E_K(OP) (clause 4.1).
    pub fn opc(k: &Block, op: &Block) -> Block {
        xor(&encrypt(k, op), op)
    }

    /// OUTi = E_K(rot(TEMP XOR OPc, ri) XOR ci) XOR OPc, TEMP = E_K(RAND XOR OPc), i = 2..5.
    fn out(&self, temp: &Block, i: usize) -> Zeroizing<Block> {
        let mut x = rot(&xor(temp, &self.opc), R[i - 1]);
        x[15] ^= C_LAST[i - 1];
        Zeroizing::new(xor(&encrypt(&self.k, &x), &self.opc))
    }

    fn temp(&self, rand: &Block) -> Zeroizing<Block> {
        Zeroizing::new(encrypt(&self.k, &xor(rand, &self.opc)))
    }

    /// OUT1: f1 and f1* (clause 4.1), IN1 = SQN || AMF || SQN || AMF.
    fn out1(&self, rand: &Block, sqn: &[u8; 6], amf: &[u8; 2]) -> Block {
        let temp = self.temp(rand);
        let mut in1 = [0u8; 16];
        in1[..6].copy_from_slice(sqn);
        in1[6..8].copy_from_slice(amf);
        in1[8..14].copy_from_slice(sqn);
        in1[14..].copy_from_slice(amf);
        let mut x = rot(&xor(&in1, &self.opc), R[0]);
        x[15] ^= C_LAST[0];
        let x = xor(&x, &temp);
        xor(&encrypt(&self.k, &x), &self.opc)
    }

    /// f1: the network authentication code MAC-A.
    pub fn f1(&self, rand: &Block, sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        let out = self.out1(rand, sqn, amf);
        out[..8].try_into().expect("8 bytes")
    }

    /// f1*: the resynchronisation authentication code MAC-S.
    pub fn f1_star(&self, rand: &Block, sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        let out = self.out1(rand, sqn, amf);
        out[8..].try_into().expect("8 bytes")
    }

    /// f2, f3, f4 and f5 for one RAND.
    pub fn f2345(&self, rand: &Block) -> Outputs {
        let temp = self.temp(rand);
        let out2 = self.out(&temp, 2);
        Outputs {
            res: out2[8..].try_into().expect("8 bytes"),
            ak: out2[..6].try_into().expect("6 bytes"),
            ck: self.out(&temp, 3),
            ik: self.out(&temp, 4),
        }
    }

    /// f5*: the anonymity key of a resynchronisation (AUTS).
    pub fn f5_star(&self, rand: &Block) -> [u8; 6] {
        let temp = self.temp(rand);
        self.out(&temp, 5)[..6].try_into().expect("6 bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3GPP TS 35.208 clause 4.3, test sets 1 to 6: K, RAND, SQN, AMF, OP, OPc, f1, f1*, f2,
    /// f5, f3, f4, f5*.
    const SETS: [[&str; 13]; 6] = [
        [
            "465b5ce8b199b49faa5f0a2ee238a6bc",
            "23553cbe9637a89d218ae64dae47bf35",
            "ff9bb4d0b607",
            "b9b9",
            "cdc202d5123e20f62b6d676ac72cb318",
            "cd63cb71954a9f4e48a5994e37a02baf",
            "4a9ffac354dfafb3",
            "01cfaf9ec4e871e9",
            "a54211d5e3ba50bf",
            "aa689c648370",
            "b40ba9a3c58b2a05bbf0d987b21bf8cb",
            "f769bcd751044604127672711c6d3441",
            "451e8beca43b",
        ],
        [
            "0396eb317b6d1c36f19c1c84cd6ffd16",
            "c00d603103dcee52c4478119494202e8",
            "fd8eef40df7d",
            "af17",
            "ff53bade17df5d4e793073ce9d7579fa",
            "53c15671c60a4b731c55b4a441c0bde2",
            "5df5b31807e258b0",
            "a8c016e51ef4a343",
            "d3a628ed988620f0",
            "c47783995f72",
            "58c433ff7a7082acd424220f2b67c556",
            "21a8c1f929702adb3e738488b9f5c5da",
            "30f1197061c1",
        ],
        [
            "fec86ba6eb707ed08905757b1bb44b8f",
            "9f7c8d021accf4db213ccff0c7f71a6a",
            "9d0277595ffc",
            "725c",
            "dbc59adcb6f9a0ef735477b7fadf8374",
            "1006020f0a478bf6b699f15c062e42b3",
            "9cabc3e99baf7281",
            "95814ba2b3044324",
            "8011c48c0c214ed2",
            "33484dc2136b",
            "5dbdbb2954e8f3cde665b046179a5098",
            "59a92d3b476a0443487055cf88b2307b",
            "deacdd848cc6",
        ],
        [
            "9e5944aea94b81165c82fbf9f32db751",
            "ce83dbc54ac0274a157c17f80d017bd6",
            "0b604a81eca8",
            "9e09",
            "223014c5806694c007ca1eeef57f004f",
            "a64a507ae1a2a98bb88eb4210135dc87",
            "74a58220cba84c49",
            "ac2cc74a96871837",
            "f365cd683cd92e96",
            "f0b9c08ad02e",
            "e203edb3971574f5a94b0d61b816345d",
            "0c4524adeac041c4dd830d20854fc46b",
            "6085a86c6f63",
        ],
        [
            "4ab1deb05ca6ceb051fc98e77d026a84",
            "74b0cd6031a1c8339b2b6ce2b8c4a186",
            "e880a1b580b6",
            "9f07",
            "2d16c5cd1fdf6b22383584e3bef2a8d8",
            "dcf07cbd51855290b92a07a9891e523e",
            "49e785dd12626ef2",
            "9e85790336bb3fa2",
            "5860fc1bce351e7e",
            "31e11a609118",
            "7657766b373d1c2138f307e3de9242f9",
            "1c42e960d89b8fa99f2744e0708ccb53",
            "fe2555e54aa9",
        ],
        [
            "6c38a116ac280c454f59332ee35c8c4f",
            "ee6466bc96202c5a557abbeff8babf63",
            "414b98222181",
            "4464",
            "1ba00a1a7c6700ac8c3ff3e96ad08725",
            "3803ef5363b947c6aaa225e58fae3934",
            "078adfb488241a57",
            "80246b8d0186bcf1",
            "16c8233f05a0ac28",
            "45b0f69ab06c",
            "3f8c7587fe8e4b233af676aede30ba3b",
            "a7466cc1e6b2a1337d49d3b66e95d7b4",
            "1f53cd2b1113",
        ],
    ];

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn every_test_set_of_ts_35_208() {
        for (i, s) in SETS.iter().enumerate() {
            let set = i + 1;
            let (k, rand, sqn, amf, op) = (h(s[0]), h(s[1]), h(s[2]), h(s[3]), h(s[4]));
            assert_eq!(hex::encode(Milenage::opc(&k, &op)), s[5], "set {set}: OPc");
            let m = Milenage::with_op(k, &op);
            assert_eq!(hex::encode(m.f1(&rand, &sqn, &amf)), s[6], "set {set}: f1");
            assert_eq!(
                hex::encode(m.f1_star(&rand, &sqn, &amf)),
                s[7],
                "set {set}: f1*"
            );
            let o = m.f2345(&rand);
            assert_eq!(hex::encode(o.res), s[8], "set {set}: f2");
            assert_eq!(hex::encode(o.ak), s[9], "set {set}: f5");
            assert_eq!(hex::encode(*o.ck), s[10], "set {set}: f3");
            assert_eq!(hex::encode(*o.ik), s[11], "set {set}: f4");
            assert_eq!(hex::encode(m.f5_star(&rand)), s[12], "set {set}: f5*");
            // The same from OPc directly, and no secret in Debug.
            let m2 = Milenage::new(k, h(s[5]));
            assert_eq!(m2.f1(&rand, &sqn, &amf), m.f1(&rand, &sqn, &amf));
            assert!(!format!("{m:?} {o:?}").contains(&s[0][..8]));
        }
    }
}
