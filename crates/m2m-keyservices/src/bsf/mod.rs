//! A Bootstrapping Server Function (3GPP TS 33.220) with the HSS it needs: the network side of
//! GBA for GBA-based security association establishment (TS-0003 clause 8.2.2.4 by reference,
//! seed 003 clause 8.2.3.2) and GBA-based remote provisioning (TS-0003 clause 8.3.2.3).
//!
//! | part | what | specification |
//! |---|---|---|
//! | [`store`] | subscribers (IMPI, K, OPc, SQN, AE-ID) and bootstrapped keys, encrypted at rest | TS 33.220 4.4.2 (the HSS's GBA user security settings, simplified) |
//! | [`server`] | Ub: HTTP Digest AKA; Zn: NAF keys over mutual TLS | TS 24.109 4, TS 33.220 4.5.2, 4.5.3 |
//! | [`client`] | the device's bootstrapping and a NAF's Zn client | TS 24.109 4.4 |
//! | [`naf`] | a NAF's PSK lookup: B-TID -> Ks_NAF over Zn, during the handshake | TS 33.222, TS-0003 8.3.2.3 |
//! | [`usim`] | a software USIM in a 0600 file | TS 35.206, TS 33.102 6.3.3 |
//!
//! # Ub (devices, plain HTTP)
//!
//! `GET /` with `Authorization: Digest username="<IMPI>", realm="<BSF FQDN>", nonce="", uri="/",
//! response=""` is answered `401` with `WWW-Authenticate: Digest realm=..., nonce=base64(RAND ||
//! AUTN), algorithm=AKAv1-MD5, qop="auth-int"`; the BSF has spent the subscriber's SQN in its
//! store before the challenge leaves. The device's USIM checks AUTN, then `GET /` again with the
//! digest over RES (RFC 3310): `200` with a `BootstrappingInfo` body (B-TID = base64(RAND)@BSF
//! FQDN, the key's lifetime), `Content-Type: application/vnd.3gpp.bsf+xml` and an
//! `Authentication-Info` whose `rspauth` proves the BSF knew RES. A wrong digest, or a nonce
//! unknown, expired (`challenge_seconds`) or answered before, gets a fresh `401`; an AUTS
//! (resynchronisation) moves the SQN above the USIM's and challenges again; an empty response (the
//! USIM did not recognise the network) gets `403`, and so does an unknown IMPI.
//!
//! # Zn (NAFs, mutual TLS)
//!
//! `POST /zn/naf-key` `{"bTid": "...", "nafFqdn": "...", "uaSecurityProtocolId": "<10 hex>"}` from a
//! NAF whose certificate names one of `[[nafs]]` (a CSE-ID, whose NAF FQDN is its public domain
//! name, or an FQDN), for its own FQDN only: `200` `{"ksNaf": "<64 hex>", "impi": ..., "aeId": ...,
//! "bootstrapTime": ..., "keyLifetime": ..., "lifetime": SECONDS}` with Ks_NAF = KDF(Ks, "gba-me",
//! RAND, IMPI, NAF_Id) (TS 33.220 Annex B); `403` for a NAF the BSF does not know or another FQDN,
//! `404` for an unknown or expired B-TID. `aeId` is the AE-ID the subscriber was provisioned with:
//! the NAF binds the association to it.
//!
//! # Simulated, real
//!
//! The USIM is a file and the HSS a table of the BSF's store: 3GPP networks keep them in a UICC and
//! a separate node (Zh). Every message and derivation is the real one: MILENAGE, the AKA checks,
//! Digest AKA, the B-TID, Ks and Ks_NAF.

pub mod client;
pub mod config;
pub mod naf;
pub mod server;
pub mod store;
pub mod usim;

pub use client::{bootstrap, current_key, BootstrapError, Bootstrapped, NafKey, ZnClient};
pub use config::{BsfConfig, DEFAULT_CONFIG};
pub use naf::NafKeys;
pub use server::{open_store, Bsf, RunningBsf};
pub use usim::SoftwareUsim;
