//! Key services of the Security CSF as servers of their own (TS-0003 clauses 8.3 and 8.8).
//!
//! [`maf`] holds the M2M Authentication Function: its server (a TLS listener with a small HTTP/JSON API, SQLite
//! storage with key values encrypted at rest) and a client library that keeps one TLS connection so that the
//! connection key Kc it registers is the one both sides export. [`mef`] holds the M2M Enrolment Function:
//! remote security provisioning from the bootstrap exporter key Ke.

#![forbid(unsafe_code)]

mod at_rest;
pub mod maf;
pub mod mef;
mod provisioned_keys;
pub mod psk_fetch;
pub mod sae;
