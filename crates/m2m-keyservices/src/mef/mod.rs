//! The M2M Enrolment Function (MEF): remote security provisioning with a pre-provisioned symmetric
//! enrolee key (TS-0003 clause 8.3.2.1) or certificates (8.3.2.2), and the key derivations of
//! clause 10.3.
//!
//! # Bootstrap
//!
//! An enrolee opens a TLS 1.2 connection to the MEF with TLS-PSK, `psk_identity` = KpmID
//! (`relative@MEF-FQDN`) and `psk` = Kpm, or with a certificate chaining to the MEF's root of trust.
//! Both ends then run the TLS exporter (RFC 5705) on that connection with the label
//! `"EXPORTER-oneM2M-Bootstrap"`, no context, 48 bytes: Ke = the 32 least significant (last) bytes,
//! RelativeKeID = the 16 most significant (first) bytes, KeID = `hexBinary(RelativeKeID)@MEF-FQDN`
//! (clauses 8.3.2.1, 10.3.1, 10.3.4). Ke never crosses the wire.
//!
//! # HTTP API (project choice)
//!
//! TS-0032 (the MEF/MAF resource details) was not available, so the enrolment exchange of clause 8.3.4
//! and the credential retrieval of clause 8.3.2.1 are carried by this small HTTP/1.1 JSON API on the
//! same TLS connection. Errors are `{"error": "..."}` with the HTTP status.
//!
//! # GBA-authenticated enrolees
//!
//! With `[gba]` the MEF is a NAF of a BSF ([`crate::bsf`]): an enrolee with a USIM offers its
//! B-TID as psk_identity and the MEF fetches Ks_NAF for its own FQDN over Zn inside the handshake
//! ([`crate::bsf::NafKeys`]); the enrolee is the AE-ID of the subscriber record, read against
//! `in_cse_id`. Ke and KeID then come from the exporter of that association, as for Kpm: TS-0003
//! clause 8.3.2.3 has the MEF be the BSF (Ke = Ks, KeID = B-TID); with the BSF apart, KeIDs stay
//! `hex@MEF-FQDN`, by which the MAF and the targets find the MEF.
//!
//! `POST /mef/enrolment` (enrolee; PSK on Kpm or a B-TID, or a certificate):
//! ```json
//! {"indications": ["MAF", "RemoteMgmt"], "mafId": "maf.keys.example.net",
//!  "targets": [{"id": "/id-in", "suid": 12}]}
//! ```
//! - `indications`: `MAF`, `Cert`, `RemoteMgmt`, ... as in 8.3.4; `MAF` needs `mafId`. Empty only
//!   when `targets` names a target (a Kpsa for a CSE, SUID 12).
//! - `mafId`: the MAF's FQDN; it becomes the target allowed to fetch Km (SUID 11).
//! - `targets`: further enrolment targets and the SUID each may fetch; every (id, suid) must be
//!   allowed by the MEF configuration (`[[targets]]`), else 400.
//!
//! `201 Created`: `{"keID": "HEX@MEF-FQDN", "enroleeID": "...", "lifetime": SECONDS}`. The MEF stores
//! Ke (AES-256-GCM at rest) with its KeID, the enrolee, MAF-ID, targets and expiry; the enrolee computes
//! the same Ke/KeID from its own exporter ([`client::MefClient::enrol`] checks that the KeIDs agree).
//! A second enrolment on the same connection replaces the first (same KeID).
//!
//! `GET /mef/fetchCredentials/{KeID}/{SUID}` (enrolment target; certificate only; the optional
//! `X-M2M-Origin` header, the "From" of 8.3.2.1, must equal the certificate identity):
//! - 403 unless the target is configured for SUID and the enrolment named it (for SUID 11: its
//!   `mafId` or a target row with SUID 11);
//! - 404 for an unknown or expired KeID;
//! - `200 OK`: `{"status": "SUCCESS", "keID": ..., "suid": N, "credential": "<hex>",
//!   "enroleeID": ..., "lifetime": SECONDS}` where the credential is ([`credential_for`]):
//!   SUID 11 Km = HMAC(Ke, label || MAF-ID) with MAF-ID = the target's FQDN (10.3.2);
//!   SUID 12 Kpsa = HMAC(Ke, label || Enrolee-B-ID) with Enrolee-B-ID = the target's CSE-ID/AE-ID
//!   (10.3.3); any other SUID the usage-constrained key of 10.3.7 with the target ID as configured.
//!   `lifetime` is the Lifetime of clause 8.3.2.1: the seconds the enrolment has left (the MEF's
//!   clock). A target keeps nothing derived from it longer: the MAF ends a client registration made
//!   with that Km, and so its keys, when the enrolment ends ([`crate::maf`]).
//!
//! `POST /mef/revocation` (an administrator: a certificate identity among `admins`):
//! `{"keID": "..."}` or `{"enroleeID": "..."}`. The enrolments it selects are deleted, Ke with them:
//! `200 OK` `{"revoked": [KeID, ...]}`, 404 when none matched, 403 for anyone else. The MAF
//! confirms a remote-provisioned Km's enrolment at every handshake and before handing out a key
//! registered over it ([`crate::maf`]), so a revocation ends those too.
//!
//! The enrolment file is 0600 in a 0700 directory ([`m2m_security::data_files`]: created so,
//! tightened when group or others may read, refused when they may write); keep it in a directory
//! of its own (the default `mef-data/`) rather than next to other files.
//!
//! Target identities come from the certificate ([`m2m_security::certificates::identity_of`] with the
//! configured `sp_fqdn`): an SP-relative CSE-ID (`/id-in`), AE-ID, or an FQDN (MAF).
//!
//! The listener is the transport layer's ([`m2m_transport`]: connection cap, handshakes per
//! address, timeouts, graceful shutdown; `[limits]` in the configuration), which writes one audit
//! line per association established or refused.
//!
//! Audit lines (tracing target `audit`) carry identities and KeIDs only, never key material.
//!
//! # Not done (MVP)
//! Re-authentication key Ker, certificate provisioning (`Cert` is recorded but no certificate is
//! issued), MEF client commands (8.3.9), DTLS; a GBA enrolment's lifetime is the MEF's
//! `lifetime_seconds`, not capped at the B-TID's.

pub mod client;
pub mod config;
pub mod server;
pub mod store;
pub mod target_keys;

pub use client::{ClientError, EnrolResult, EnrolmentRequest, FetchedCredential, MefClient};
pub use config::{MefConfig, DEFAULT_CONFIG};
pub use server::{Mef, RunningMef};
pub use target_keys::ProvisionedKpsaKeys;

use m2m_security::credentials::Secret;
use m2m_security::kdf;

/// SUID of Km (MAF, pre-provisioned family: table 6.3.4.2.39-1).
pub const SUID_MAF: u32 = 11;
/// SUID of Kpsa (SAEF).
pub const SUID_SAEF: u32 = 12;

/// The key an enrolment target with identity `target_id` receives for `suid`; the enrolee derives the
/// same one locally from its Ke.
pub fn credential_for(ke: &Secret, suid: u32, target_id: &str) -> Secret {
    match suid {
        SUID_MAF => kdf::km(ke, target_id),
        SUID_SAEF => kdf::kpsa(ke, target_id),
        other => kdf::usage_constrained(ke, other, target_id),
    }
}
