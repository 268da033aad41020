//! The Security CSF logic, no sockets (TS-0003).
//!
//! Every decision here is a pure function: the facts of a request go in, a decision and a short reason come
//! out. Time, network addresses and group membership are supplied by the caller.

#![forbid(unsafe_code)]

pub mod access_control;
pub mod association;
/// The tamper-evident audit trail: security events chained by hash (seeds/002).
pub mod audit_trail;
/// Certificates in the TS-0003 clause 10.1 profile and the identity they carry (clause 8.2.2.2).
pub mod certificates;
pub mod credentials;
pub mod data_files;
/// DTLS 1.2 session resumption, the association decided again (RFC 5246 clause 7.3).
pub mod dtls_resumption;
/// Direct dynamic authorization: the DAS exchange and the DAS's policy (TS-0003 clause 7.3.2.2).
pub mod dynamic_authorization;
pub mod e2e;
/// Generic Bootstrapping Architecture (3GPP TS 33.220): MILENAGE and the GBA derivations.
pub mod gba;
/// oneM2M key derivations (TS-0003 clause 10.3, seeds/001 clause 8.2.1).
pub mod kdf;
pub mod registration_rules;
/// Certificate status verification with CRLs (TS-0003 clause 8.1.2.2, RFC 5280 clause 5).
pub mod revocation;
pub mod secure_environment;
pub mod tls;
/// Tokens of token-based access control: JWT claims signed ES256, verified (TS-0003 7.3.2.4-7.3.2.6).
pub mod token;
/// A file read again whenever it changes (CRLs, revoked token IDs).
pub mod watched_file;
