//! Generic Bootstrapping Architecture (3GPP TS 33.220) for GBA-based security association
//! establishment (seed 003 clause 8.2.3.2) and GBA-based remote provisioning (seed 004 clause
//! 6.1.2.1 c): the authentication functions of the USIM and the HSS, and the key derivations.
//!
//! | module | what | specification |
//! |---|---|---|
//! | [`milenage`] | the authentication and key generation functions f1, f1*, f2, f3, f4, f5, f5* | 3GPP TS 35.206 (test data TS 35.208) |
//! | [`aka`] | authentication vectors, the USIM's check of AUTN and SQN, resynchronisation with AUTS | 3GPP TS 33.102 6.3, Annex C |
//! | [`bootstrapping`] | the Ub run, both sides: the BSF's challenge and verdict (B-TID, resynchronisation), the UE's answer | TS 33.220 4.5.2, TS 24.109 4.4, Annex C |
//! | [`digest_aka`] | the Ub bootstrapping's HTTP Digest AKA: nonce = RAND \|\| AUTN, password = RES, qop auth-int, rspauth | RFC 3310, RFC 2617, TS 24.109 4 |
//! | [`key_derivation`] | Ks = CK \|\| IK, the B-TID, Ks_NAF (GBA_ME) with the generic KDF, the NAF_Id | 3GPP TS 33.220 4.5.2, Annex B, Annex H |

pub mod aka;
pub mod bootstrapping;
pub mod digest_aka;
pub mod key_derivation;
pub mod milenage;
