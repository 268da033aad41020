//! The Security CSF logic, no sockets (TS-0003).
//!
//! Every decision here is a pure function: the facts of a request go in, a decision and a short reason come
//! out. Time, network addresses and group membership are supplied by the caller.
//!
//! # Clause index
//!
//! | clause | module |
//! |---|---|
//! | TS-0003 7.1 access control decision (7.1.2-7.1.5) | [`access_control`] |
//! | TS-0003 7.3.2.2 direct dynamic authorization, the DAS's policy | [`dynamic_authorization`] |
//! | TS-0003 7.3.2.4-7.3.2.6 tokens (JWT claims, ES256) | [`token`] |
//! | TS-0003 8.1.2.2 certificate status with CRLs (RFC 5280 clause 5) | [`revocation`] |
//! | TS-0003 8.2.1 security associations: what a handshake proved | [`association`] |
//! | TS-0003 8.2.2.2, 10.1 certificates and the identity they carry | [`certificates`] |
//! | TS-0003 8.1.3, 8.3.2.3 GBA (3GPP TS 33.220: MILENAGE, the GBA derivations) | [`gba`] |
//! | TS-0003 8.4, 8.5 end-to-end security (ESPRIM, ESData) | [`e2e`] |
//! | TS-0003 10.2 TLS and DTLS in the oneM2M profiles | [`tls`] |
//! | RFC 5246 7.3 DTLS 1.2 session resumption | [`dtls_resumption`] |
//! | TS-0003 10.3 key derivations (group keys: seeds/001 8.2.1) | [`kdf`] |
//! | TS-0003 10.4, 10.5 credential identifiers and key material | [`credentials`] |
//! | TS-0001 10.2.2.2, 9.6.29 AE registration rules | [`registration_rules`] |
//! | seeds/002 6.4.1 the Secure Environment | [`secure_environment`] |
//! | seeds/002 security administration: the tamper-evident audit trail | [`audit_trail`] |
//! | private data files of the services | [`data_files`] |
//! | files read again when they change (CRLs, revoked token IDs) | [`watched_file`] |

#![forbid(unsafe_code)]

pub mod access_control;
pub mod association;
pub mod audit_trail;
pub mod certificates;
pub mod credentials;
pub mod data_files;
pub mod dtls_resumption;
pub mod dynamic_authorization;
pub mod e2e;
pub mod gba;
pub mod kdf;
pub mod registration_rules;
pub mod revocation;
pub mod secure_environment;
pub mod tls;
pub mod token;
pub mod watched_file;
